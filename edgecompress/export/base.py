"""What every exporter shares: the export template and the logits-only wrapper; the IO spec written beside each
file is export/iospec.py's (re-exported here for the exporters).

Registration: an exporter *class* implements a declared format row (``@exporter("onnx")`` on the class; its name,
suffix, runtime and revision are the row's); callers instantiate them the same way for every format:
``EXPORTERS.get(fmt)(batch=N)``, N the largest batch the file must accept (only formats with FormatSpec.fixed_batch
use it). Constructing one is free.
"""
from __future__ import annotations

import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterable, Optional

import numpy as np

from edgecompress.export.iospec import (IO_FILE, InferFn, IOSpec, check_inputs, file_mb, read_io_beside,  # noqa: F401
                                        write_io)
from edgecompress.formats import FORMATS, FormatSpec


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
        from edgecompress.export.quant.table import bytes_by_component

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
        job.details.update(export_s=round(time.perf_counter() - started, 2), file_mb=file_mb(out),
                           file_bytes=bytes_by_component(out, job.details.get("embedding_table")))
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
