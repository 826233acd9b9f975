"""What every exporter shares: the export template, the IO spec written beside each file, the logits-only wrapper.

The IO spec is the contract with the device: the on-device agent (edgecompress/device/agent.py) reads io.json, never
the model, to build inputs of the right names, dtype and length. Every exporter writes it (IO_FILE) beside its model
file, and every loader reads it from there, so the host checks the same sequence limit the device will hit.

Registration: an exporter *class* implements a declared format row (``@exporter("onnx")`` on the class; its name,
suffix, runtime and revision are the row's); callers instantiate them the same way for every format:
``EXPORTERS.get(fmt)(batch=N)``, N the largest batch the file must accept (only formats with FormatSpec.fixed_batch
use it). Constructing one is free.
"""
from __future__ import annotations

import json
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Optional

import numpy as np

from edgecompress.formats import FORMATS, FormatSpec

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
        tokenizer uses (after vocabulary trimming that id moved)."""
        return cls(vocab_size=model.config.vocab_size, num_labels=model.config.num_labels, max_seq_len=max_seq_len,
                   pad_token_id=tokenizer.pad_token_id or 0, **fields)

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


@dataclass
class ExportJob:
    """One export in progress, handed to the format's hooks. Hooks append to notes/details; the template returns
    them as the ExportResult, so every format reports through the same two fields."""
    fp32_model: object        # the caller's model, never modified: the fallback's fp32 reference
    model: object             # after the torch-side steps of the intent (QAT, codebook clustering)
    io: IOSpec
    quant: object             # recipe.QuantSpec, None for fp32
    calib: Optional[Iterable]
    tmp: Path                 # scratch directory, removed after write(): intermediates never reach out_dir or the CWD
    started: float            # time.perf_counter() before the torch-side steps
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def codebook_as_dense(self, runtime: str) -> None:
        """A runtime without lookup-table weights runs clustered weights written out dense: say so."""
        bits = self.quant.codebook_bits
        self.notes.append(f"codebook {bits}-bit expanded to dense fp32 weights: {runtime} has no lookup-table weight "
                          f"kernel; accuracy is the codebook's, file size is fp32's")
        self.details["precision"] = f"codebook{bits}-dense-fp32"


class Exporter(ABC):
    """Template for every format: refuse what the format cannot realize -> torch-side steps of the intent (QAT,
    codebook: quant.prepare_torch) -> quantize_module -> lower -> quantize_program -> write -> io.json.

    A toolchain quantizes either the torch module before lowering (torch quantize_dynamic, PT2E) or the lowered
    program (onnxruntime.quantization, ai-edge-quantizer), so a format overrides the one of the two quantize hooks
    its toolchain uses; the other stays the identity. Format identity (suffix, runtime, pip extra) is read from
    edgecompress.formats.FORMATS[name]: a class declares only `name`.
    """
    name: ClassVar[str]  # set by @exporter from the format row
    # When the intent leaves quantize.embeddings unset, whether codebook clustering includes the embedding table.
    embeddings_default: ClassVar[bool] = False

    def __init__(self, batch: int = 1):
        """batch: the largest batch the file must accept. Formats whose file bakes its batch in (FormatSpec.fixed_batch:
        .pte plans memory for it, .tflite has one signature) export for it; the others accept any batch and ignore it."""
        from edgecompress.errors import UserInputError

        if batch < 1:
            raise UserInputError(f"{self.name} export batch must be >= 1, got {batch}")
        self.batch = batch

    @property
    def spec(self) -> FormatSpec:
        return FORMATS[self.name]

    @property
    def revision(self) -> int:
        return self.spec.revision

    @property
    def suffix(self) -> str:
        return self.spec.suffix

    @property
    def runtime(self) -> str:
        """The runtime that opens the file: the on-device agent's --runtime."""
        return self.spec.runtime

    @property
    def extra(self) -> str:
        return self.spec.extra

    def export(self, model, io: IOSpec, quant, calib: Optional[Iterable[dict[str, np.ndarray]]],
               out_dir: Path) -> ExportResult:
        """Write model<suffix> and io.json into out_dir: fp32 when quant is None, else the QuantSpec realized with
        the format's own toolchain. The caller's model is left unchanged."""
        from edgecompress.errors import UserInputError
        from edgecompress.export.quant import prepare_torch

        refusal = self.spec.refusal(quant)
        if refusal is not None:  # before any work: a refused intent must not cost a QAT run or a lowering
            raise UserInputError(refusal)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"model{self.suffix}"
        notes, details = self.describe(io, quant)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"edgecompress.{self.name}.") as tmp:
            prepared, qnotes, qdetails = prepare_torch(model, quant, calib, embeddings_default=self.embeddings_default)
            job = ExportJob(fp32_model=model, model=prepared, io=io, quant=quant, calib=calib, tmp=Path(tmp),
                            started=started, notes=notes + qnotes, details={**details, **qdetails})
            module = logits_module(job.model)
            if quant is not None:
                module = self.quantize_module(job, module)
            program = self.lower(job, module)
            if quant is not None:
                program = self.quantize_program(job, program)
            self.write(job, program, out)
        job.details.update(export_s=round(time.perf_counter() - started, 2), file_mb=file_mb(out))
        write_io(self.file_io(io), out_dir)
        return ExportResult(file=out, notes=job.notes, details=job.details)

    def describe(self, io: IOSpec, quant) -> tuple[list[str], dict]:
        """The notes and details known before any work (shape bounds, converter); the hooks add the rest."""
        return [], {"precision": "fp32" if quant is None else "int8", "max_seq_len": io.max_seq_len}

    def quantize_module(self, job: ExportJob, module):
        """Realize the intent on the torch module (input_ids, attention_mask) -> logits; returns what lower() gets."""
        return module

    @abstractmethod
    def lower(self, job: ExportJob, module):
        """Turn the torch module into the format's program (a file in job.tmp, bytes, a traced module ...)."""

    def quantize_program(self, job: ExportJob, program):
        """Realize the intent on the lowered program; returns what write() gets."""
        return program

    @abstractmethod
    def write(self, job: ExportJob, program, out: Path) -> None:
        """Write the program to `out` as the one self-contained file the device loads."""

    def file_io(self, io: IOSpec) -> IOSpec:
        """The IOSpec written beside the file (a fixed-shape format records its shape here)."""
        return io

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


def exporter(name: str):
    """Class decorator: this Exporter subclass writes and loads the declared format `name` (formats.FORMATS)."""
    from edgecompress.registry import EXPORTERS

    def deco(cls):
        cls.name = name
        return EXPORTERS.register(name)(cls)
    return deco


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
