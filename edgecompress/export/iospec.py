"""The IO spec: the contract with the device. The on-device agent (edgecompress/device/agent.py) reads io.json,
never the model, to build inputs of the right names, dtype and length. Every exporter writes it (IO_FILE) beside its
model file, and every loader reads it from there (IOSpec.read: the one reader), so the host checks the same sequence
limit the device will hit. numpy only: parity, predict and bench read it without torch.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

IO_FILE = "io.json"  # written by every exporter beside its model file

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
    # Formats whose file has one fixed input shape (.tflite): [batch, seq] of that signature, and whether inputs are
    # padded up to it (pad_token_id in input_ids, 0 in attention_mask; extra rows looped). None/False = dynamic axes.
    static_shape: Optional[tuple[int, int]] = None
    pad_to_max: bool = False

    def to_json(self) -> dict:
        d = asdict(self)
        d["input_names"] = list(self.input_names)
        if self.static_shape is not None:
            d["static_shape"] = list(self.static_shape)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "IOSpec":
        d = dict(d)
        d["input_names"] = tuple(d["input_names"])
        if d.get("static_shape") is not None:
            d["static_shape"] = tuple(int(v) for v in d["static_shape"])
        return cls(**d)

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2))

    @classmethod
    def read(cls, path: Path) -> "IOSpec":
        """The one reader of an io.json: every consumer gets the same fields and defaults."""
        return cls.from_json(json.loads(Path(path).read_text()))

    @classmethod
    def for_model(cls, model, tokenizer, max_seq_len: int, **fields) -> "IOSpec":
        """The spec of a model about to be exported: its vocabulary and head from its config, the pad id its own
        tokenizer uses (after vocabulary trimming that id moved). `fields` override (a task's output: an
        embedding's num_labels is its width, its output_name "embedding")."""
        base = {"vocab_size": model.config.vocab_size, "num_labels": model.config.num_labels,
                "pad_token_id": tokenizer.pad_token_id or 0}
        return cls(max_seq_len=max_seq_len, **{**base, **fields})

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


def write_io(io: IOSpec, out_dir: Path) -> Path:
    path = Path(out_dir) / IO_FILE
    io.write(path)
    return path


def read_io_beside(model_path: Path) -> IOSpec:
    """The IOSpec an exporter wrote next to model_path; a missing one is a user error (copied file alone)."""
    from edgecompress.errors import UserInputError

    path = Path(model_path).parent / IO_FILE
    if not path.is_file():
        raise UserInputError(f"{path} not found: keep the {IO_FILE} the exporter wrote beside {Path(model_path).name}")
    return IOSpec.read(path)


def check_inputs(inputs: dict[str, np.ndarray], io: IOSpec) -> tuple[np.ndarray, np.ndarray]:
    """Validate and normalize InferFn inputs -> (input_ids, attention_mask), both C-contiguous int64 [B,S].

    Checked here, before the runtime sees them: a too-long sequence makes ExecuTorch fail with an opaque
    error 0x12 and onnxruntime with an index error deep in the position embedding.
    """
    from edgecompress.errors import UserInputError

    missing = [n for n in io.input_names if n not in inputs]
    if missing:
        raise UserInputError(f"missing model input(s) {missing}; expected {list(io.input_names)}")
    ids = np.ascontiguousarray(inputs["input_ids"], dtype=np.int64)
    mask = np.ascontiguousarray(inputs["attention_mask"], dtype=np.int64)
    if ids.ndim != 2 or ids.shape != mask.shape or ids.shape[0] < 1 or ids.shape[1] < 1:
        raise UserInputError(f"input_ids and attention_mask must share a [batch, seq] shape with batch, seq >= 1; "
                             f"got {ids.shape} and {mask.shape}")
    if ids.shape[1] > io.max_seq_len:
        raise UserInputError(f"sequence length {ids.shape[1]} exceeds the exported max_seq_len {io.max_seq_len}; "
                             f"truncate inputs to {io.max_seq_len} tokens or re-export with a larger export.max_seq_len")
    if ids.min() < 0 or ids.max() >= io.vocab_size:
        raise UserInputError(f"token ids must lie in [0, {io.vocab_size}) (the model's vocab_size); "
                             f"got [{ids.min()}, {ids.max()}]: tokenize with the model's own tokenizer")
    return ids, mask


def file_mb(path: Path) -> float:
    """File size in MiB, the unit the bench agent and the pipeline report."""
    return round(Path(path).stat().st_size / 2**20, 3)
