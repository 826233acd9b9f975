"""The one table of export formats: what each file is, which runtime opens it, what installs its toolchain, and
which parts of a quantization intent its toolchain can realize.

Torch-free on purpose: the recipe and profile schemas, `plan`, the step graph, `bench`, `verify` and the exporters
all read this table, and `plan` must stay fast. Each row is declared into registry.EXPORTERS, so a format declared
elsewhere (`declare_format(FormatSpec(...))` before the recipe is read) is accepted the same way. Adding a format is
one row, one exporter module (edgecompress/export/<name>.py, `@exporter("<name>")` on its class) and one loader in
the on-device agent (edgecompress/device/agent_runtimes.py) under the row's runtime.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator

from edgecompress.registry import EXPORTERS


SET = "set"  # a Refusal value: the field is refused whenever the recipe sets it (not None)


@dataclass(frozen=True)
class Refusal:
    """A value of a QuantSpec field that a format's toolchain cannot realize, and why (one line, with the fix)."""
    field: str
    value: object
    reason: str

    def example(self) -> object:
        """A recipe value that triggers this refusal (an empty mapping sets a sub-config to its defaults)."""
        return {} if self.value == SET else self.value

    def matches(self, quant) -> bool:
        got = getattr(quant, self.field, None)
        return got is not None if self.value == SET else got == self.value


@dataclass(frozen=True)
class FormatSpec:
    name: str
    suffix: str
    runtime: str                   # the runtime that opens the file: the on-device agent's --runtime
    extra: str                     # pip extra that installs the host toolchain ("" = the base install)
    host_modules: tuple[str, ...]  # importable on the host to export and verify the file
    module: str                    # the module whose @exporter class writes and loads the file
    # The file bakes its largest batch in (.pte plans memory for it, .tflite has one signature): export for the
    # batch the bench runs.
    fixed_batch: bool
    refuses: tuple[Refusal, ...] = ()
    # A torch-free C++ runner exists (edgecompress/device/native.py): it measures what an app would see, and runs on
    # a device without Python. Profiles use it by default for such a format.
    native_runner: bool = False
    # Bumped when the exporter writes different files for the same inputs: it is part of the export's artifact id,
    # so a cached file from an older exporter is never reused.
    revision: int = 1

    def refusal(self, quant) -> Optional[str]:
        """Why this format cannot realize `quant` (a recipe.QuantSpec), or None. Same text for plan and exporter."""
        if quant is None:
            return None
        for r in self.refuses:
            if r.matches(quant):
                return f"{self.name} cannot realize quantize.{r.field}: {r.value}: {r.reason}"
        return None

    def missing_modules(self) -> list[str]:
        return [m for m in self.host_modules if importlib.util.find_spec(m) is None]


def declare_format(spec: FormatSpec) -> FormatSpec:
    return EXPORTERS.declare(spec)


for _spec in (
    FormatSpec("onnx", ".onnx", "onnxruntime", "onnx", ("onnx", "onnxruntime", "onnxscript"),
               "edgecompress.export.onnx", fixed_batch=False),
    FormatSpec("ptl", ".ptl", "lite_interpreter", "", ("torch",), "edgecompress.export.ptl", fixed_batch=False,
               revision=2,  # 2: 8-bit word table by default
               refuses=(Refusal("activations", "static",
                                "eager static quantization needs QuantStubs around every region and FX mode cannot "
                                "trace HF encoders; use activations: dynamic for ptl, or export static int8 as "
                                "onnx/pte"),)),
    FormatSpec("pte", ".pte", "executorch", "pte", ("executorch", "torchao"), "edgecompress.export.pte",
               fixed_batch=True, native_runner=True,
               revision=3),  # 2: eager attention, no-op expands dropped, 8-bit word table by default; 3: 8-bit position table
    # litert-torch pulls ~750 MB (jax): its own extra, named in the error when missing.
    FormatSpec("tflite", ".tflite", "tflite", "tflite", ("litert_torch", "ai_edge_litert", "ai_edge_quantizer"),
               "edgecompress.export.tflite", fixed_batch=True,
               refuses=(Refusal("activations", "static",
                                "tflite int8 is dynamic range: full int8 (static_wi8_ai8) measured 9.6 points below fp32 "
                                "(docs/tflite.md); use activations: dynamic, or drop tflite from export.formats"),
                        Refusal("weights", "codebook",
                                "tflite int8 has linear int8 weights only; use weights: linear, or drop tflite "
                                "from export.formats"),
                        # ai-edge-quantizer's recipe could leave layers fp32, but no search drives it yet: refused
                        # rather than silently ignored.
                        Refusal("fallback", SET,
                                "the accuracy-aware fallback is not implemented for tflite; drop quantize.fallback "
                                "or tflite from export.formats"))),
):
    declare_format(_spec)


# The declared rows by name: a live, read-only view of the registry's table (a row declared later is seen too).
FORMATS = EXPORTERS.table


def _known_format(v: str) -> str:
    if v not in EXPORTERS.names():
        raise ValueError(f"unknown format {v!r}; known: {', '.join(EXPORTERS.names())}")
    return v


def _known_runtime(v: str) -> str:
    known = sorted({f.runtime for f in EXPORTERS.rows()})
    if v not in known:
        raise ValueError(f"unknown runtime {v!r}; known: {', '.join(known)}")
    return v


FORMAT_NAMES: tuple[str, ...] = tuple(EXPORTERS.names())  # the built-in rows (argparse choices); schemas use Format
# Validated against the table when a value is read, so a declared row needs no edit in any schema.
Format = Annotated[str, AfterValidator(_known_format)]
Runtime = Annotated[str, AfterValidator(_known_runtime)]
PRECISIONS: tuple[str, ...] = ("fp32", "int8")
RUNNERS: tuple[str, ...] = ("native", "python")
Runner = Literal[RUNNERS]  # type: ignore[valid-type]
Precision = Literal[PRECISIONS]  # type: ignore[valid-type]


def default_runner(fmt: str) -> str:
    return "native" if FORMATS[fmt].native_runner else "python"


def check_runner_option(fmt: str, runner) -> None:
    """`--runner native` for a format without a native runner: one line naming the formats that have one."""
    if runner == "native" and not FORMATS[fmt].native_runner:
        from edgecompress.errors import UserInputError
        have = ", ".join(f.name for f in FORMATS.values() if f.native_runner)
        raise UserInputError(f"--runner native: .{fmt} has no native runner (only {have}); drop --runner")


def install_hint(spec: FormatSpec) -> str:
    return f'pip install -e ".[{spec.extra}]"' if spec.extra else "pip install -e ."
