"""What every exporter shares: the IO spec written beside each file, the logits-only wrapper, the interface.

The IO spec is the contract with the device: the bench agent (targets/bench_agent.py) reads io.json, never the
model, to build inputs of the right names, dtype and length.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

InferFn = Callable[[dict[str, np.ndarray]], np.ndarray]  # {"input_ids": [B,S] int64, "attention_mask": [B,S]} -> logits [B,C] fp32


@dataclass(frozen=True)
class IOSpec:
    vocab_size: int
    num_labels: int
    max_seq_len: int
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")
    output_name: str = "logits"
    input_dtype: str = "int64"
    pad_token_id: int = 0
    # Shape used to trace/export. Parity is checked at other shapes on purpose (pytorch#110347).
    example_batch: int = 2
    example_seq_len: int = 32

    def to_json(self) -> dict:
        d = asdict(self)
        d["input_names"] = list(self.input_names)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "IOSpec":
        d = dict(d)
        d["input_names"] = tuple(d["input_names"])
        return cls(**d)

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2))

    @classmethod
    def read(cls, path: Path) -> "IOSpec":
        return cls.from_json(json.loads(Path(path).read_text()))

    def example_inputs(self, batch: int, seq_len: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Random token ids (never special ids 0..999 of BERT vocabs, so no accidental [PAD]) + a ragged mask."""
        rng = np.random.default_rng(seed)
        low = min(1000, self.vocab_size - 1)
        ids = rng.integers(low, self.vocab_size, size=(batch, seq_len), dtype=np.int64)
        mask = np.ones((batch, seq_len), dtype=np.int64)
        for b in range(1, batch):  # rows after the first are padded, so masks are exercised
            keep = max(1, seq_len - 3 * b)
            mask[b, keep:] = 0
            ids[b, keep:] = self.pad_token_id
        return {"input_ids": ids, "attention_mask": mask}


@dataclass
class ExportResult:
    file: Path
    # Things the user must know about how the intent was realized, e.g. "optimize_for_mobile skipped: ...".
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)


class Exporter(ABC):
    name: str          # recipe name: "onnx" | "ptl" | "pte"
    suffix: str        # ".onnx" | ".ptl" | ".pte"
    runtime: str       # runtime the bench agent uses: "onnxruntime" | "lite_interpreter" | "executorch"
    extra: str         # pip extra that installs this exporter's toolchain

    @abstractmethod
    def missing(self) -> Optional[str]:
        """None when the toolchain imports, else a one-line message naming the extra to install."""

    @abstractmethod
    def export(self, model, io: IOSpec, quant, calib: Optional[Iterable[dict[str, np.ndarray]]],
               out_dir: Path) -> ExportResult:
        """Write the file (fp32 when quant is None, else realize the QuantSpec natively) into out_dir."""

    @abstractmethod
    def load(self, path: Path, threads: int = 1) -> InferFn:
        """Run the written file in the runtime that will run it on the device."""


def logits_module(model):
    """Wrap a HF *ForSequenceClassification so the graph has exactly (input_ids, attention_mask) -> logits.

    token_type_ids are all zero for single-sentence tasks; leaving them out keeps the device IO minimal.
    """
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]

    return LogitsOnly(model).eval()
