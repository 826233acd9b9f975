"""What a stage sees besides its model and config."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from edgecompress.data import Split, batches


@dataclass
class StageContext:
    splits: dict[str, Split]
    tokenizer: Any
    max_seq_len: int
    seed: int = 0
    teacher: Optional[Any] = None
    # The teacher's own tokenizer: after vocabulary trimming the student's ids differ from the teacher's, so
    # anything that feeds the teacher (KD targets, recovery fine-tuning) must tokenize with this one.
    teacher_tokenizer: Optional[Any] = None
    metrics: dict = field(default_factory=dict)   # a stage records what it measured here; lands in manifest.json

    def batches(self, split: str, batch_size: int, *, shuffle: bool, epoch: int = 0, subset: Optional[int] = None):
        s = self.splits[split].subset(subset, self.seed)
        return batches(self.tokenizer, s, batch_size, self.max_seq_len, shuffle=shuffle, seed=self.seed + epoch)
