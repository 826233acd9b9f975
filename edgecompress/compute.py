"""Where a model runs over data (training, teacher logits, importance scores, QAT, validation) and in which
precision: the recipe's `compute` section, resolved once per run to a `Placement`.

One function moves a model (`on_device`, and back to where it was when the pass ends), one moves a batch
(`place_batch`): every model-over-data pass goes through both, so a CPU run takes the same code path as a GPU run
and a tensor on two devices cannot happen. Exports, saving and artifacts stay on CPU: a stage's model leaves every
pass where it came in.

The schema and `Placement` are torch-free (plan imports them); torch is imported only to answer "is there a GPU",
and not even then when the installed torch is a CPU-only build (plan must stay well under 2 s).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, field_validator

from edgecompress.config import Cfg
from edgecompress.errors import UserInputError

Precision = Literal["auto", "fp32", "bf16", "fp16"]
# Rows per forward when a model is only evaluated on an accelerator: no gradients, and a GPU at batch 64 is
# input-bound (the lent H200 sat at 59% busy at training batch 32).
ACCELERATOR_EVAL_BATCH = 256
# Rows per forward when a model is only evaluated (accuracy, teacher logits) on the CPU: no gradients, so memory
# allows more than a training batch.
CPU_EVAL_BATCH = 64


class ComputeCfg(Cfg):
    device: str = Field("auto", description="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    precision: Precision = Field("auto", description="autocast dtype; auto = bf16 where the device has it, else fp32")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda|cuda:[0-9]+|mps", v):
            raise ValueError("expected auto, cpu, cuda, cuda:N (a GPU index) or mps")
        return v


@dataclass(frozen=True)
class Placement:
    """A resolved ComputeCfg: the torch device string, the autocast precision and the device's name."""
    device: str = "cpu"
    precision: str = "fp32"
    name: str = "cpu"

    @property
    def accelerated(self) -> bool:
        return self.device != "cpu"

    @property
    def eval_batch(self) -> int:
        return ACCELERATOR_EVAL_BATCH if self.accelerated else CPU_EVAL_BATCH

    def record(self) -> dict:
        """What a step's metrics (and so its manifest) say about where it ran."""
        return {"device": self.device, "precision": self.precision, "device_name": self.name}

    def id_part(self) -> dict:
        """What the placement adds to a training step's artifact id. The device is left out: the same recipe makes
        the same artifact wherever it runs (CPU vs GPU differ by float noise, like thread counts do), so a teacher
        fine-tuned on a GPU box is reused by a CPU box that shares the store. A reduced precision is a different
        training (bf16 rounding changes the weights well beyond noise), so bf16/fp16 are in the id; fp32 adds
        nothing, which keeps every existing id."""
        return {} if self.precision == "fp32" else {"precision": self.precision}

    def __str__(self) -> str:
        return f"{self.device} ({self.name}, {self.precision})" if self.name != self.device else \
            f"{self.device} ({self.precision})"


CPU = Placement()


def _torch_build() -> Optional[dict]:
    """{cuda, hip} of the installed torch read from torch/version.py without importing torch, or None when the
    file cannot be read (then the caller imports torch)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return None
    try:
        text = (Path(spec.origin).parent / "version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    out = {}
    for key in ("cuda", "hip"):
        m = re.search(rf"^{key}\s*(?::[^=]*)?=\s*(None|'[^']*'|\"[^\"]*\")\s*$", text, re.M)
        if m is None:
            return None
        out[key] = None if m.group(1) == "None" else m.group(1).strip("'\"")
    return out


def _cpu_only_torch() -> bool:
    """True when no accelerator can exist for this torch: a CPU-only build, not on macOS (MPS ships in every
    macOS build). Importing torch costs ~2 s here; plan must not pay it on a CPU box."""
    build = _torch_build()
    return build is not None and not build["cuda"] and not build["hip"] and sys.platform != "darwin"


def cuda_available() -> bool:
    if _cpu_only_torch():
        return False
    import torch
    return bool(torch.cuda.is_available())


def mps_available() -> bool:
    if _cpu_only_torch():
        return False
    import torch
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _cuda_device(device: str) -> str:
    import torch
    if device == "cuda":
        # Under `accelerate launch` / torchrun each process owns the GPU of its local rank, as accelerate picks it.
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0') or 0)}" if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 \
            else f"cuda:{torch.cuda.current_device()}"
    n = torch.cuda.device_count()
    if int(device.split(":")[1]) >= n:
        raise UserInputError(f"compute.device {device}: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1}); "
                             f"use cuda or one of those")
    return device


def _resolve_device(device: str) -> tuple[str, str]:
    """(torch device string, human name)."""
    if device == "auto":
        device = "cuda" if cuda_available() else "mps" if mps_available() else "cpu"
    if device == "cpu":
        return "cpu", "cpu"
    if device.startswith("cuda"):
        if not cuda_available():
            raise UserInputError(f"compute.device {device}: torch sees no CUDA device here; use compute.device: auto "
                                 f"or cpu (or install a CUDA build of torch)")
        import torch
        dev = _cuda_device(device)
        return dev, torch.cuda.get_device_name(torch.device(dev))
    if not mps_available():
        raise UserInputError("compute.device mps: torch sees no MPS device here (it needs Apple silicon, macOS 12.3+); "
                             "use compute.device: auto or cpu")
    return "mps", "Apple MPS"


def _cuda_bf16() -> bool:
    """bf16 in hardware (Ampere and later). torch >= 2.3 also says yes for emulated bf16 (V100, T4), which is slower
    than fp32 there: ask without emulation."""
    import torch
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # older torch: no emulation flag, and no emulation either
        return bool(torch.cuda.is_bf16_supported())


def _resolve_precision(precision: str, device: str) -> str:
    if precision == "auto":
        # bf16 where the GPU has it: fp32's range, so no loss scaling. The CPU stays fp32 so that a CPU run does not
        # change by default (bf16 is 2-4x faster on an avx512_bf16 CPU and slower on one without: ask for it,
        # benchmarks/accelerator); MPS stays fp32 because its bf16 autocast depends on the macOS and torch versions.
        return "bf16" if device.startswith("cuda") and _cuda_bf16() else "fp32"
    if precision == "fp16" and device == "cpu":
        raise UserInputError("compute.precision fp16 needs a CUDA or MPS device (fp16 on a CPU is slower than fp32 and "
                             "needs loss scaling); use bf16 or fp32 on cpu")
    if precision == "bf16" and device.startswith("cuda"):
        if not _cuda_bf16():
            raise UserInputError(f"compute.precision bf16: {device} has no bf16 (it needs Ampere or later); use fp16 "
                                 f"or fp32")
    return precision


def resolve(cfg: Optional[ComputeCfg] = None) -> Placement:
    """The placement a run uses; refuses (one line) a device or precision this machine does not have."""
    cfg = cfg or ComputeCfg()
    device, name = _resolve_device(cfg.device)
    return Placement(device, _resolve_precision(cfg.precision, device), name)


def trainings(recipe, placement: Placement) -> dict:
    """What `plan` prints: the placement, and the precision each training of the recipe will use (QAT is always fp32;
    Taylor importance runs fp16 as fp32)."""
    steps = {"teacher:finetune" if recipe.teacher.finetune else "teacher:load": placement.precision}
    for s in recipe.stages:
        taylor = getattr(s, "method", getattr(s, "importance", None)) == "taylor"
        steps[s.kind] = "fp32" if taylor and placement.precision == "fp16" and not getattr(s, "recovery", None) \
            else placement.precision
    if recipe.quantize.qat is not None and "int8" in recipe.export.precisions:
        steps["qat"] = "fp32"
    return {**placement.record(), "trainings": steps}


# -- torch side: one mover for models, one for batches ----------------------------------------------------------

def device_of(model) -> str:
    """The model's device as a Placement spells it (torch says "mps:0" for the one MPS device)."""
    try:
        dev = str(next(model.parameters()).device)
    except StopIteration:
        return "cpu"
    return "mps" if dev.startswith("mps") else dev


@contextlib.contextmanager
def on_device(model, placement: Placement = CPU):
    """Run the block with `model` on the placement's device; the model goes back to where it was afterwards (CPU for
    every stage's input), also when the block raises. A model already there is not moved (nested passes)."""
    before = device_of(model)
    if before != placement.device:
        model.to(placement.device)
    try:
        yield model
    finally:
        if before != placement.device:
            model.to(before)


def pin(batches: list, placement: Placement = CPU) -> list:
    """An epoch's (inputs, labels, idx) batches as torch tensors, built once: page-locked on CUDA, so each step's
    copy to the GPU is asynchronous (`place_batch` uses non_blocking)."""
    import numpy as np
    import torch
    pinned = placement.device.startswith("cuda")

    def t(v):
        v = torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
        return v.pin_memory() if pinned else v
    return [({k: t(v) for k, v in inputs.items()}, t(labels), idx) for inputs, labels, idx in batches]


def place_batch(batch, placement: Placement = CPU):
    """A tensor, a numpy array or a dict of them, on the placement's device (CPU: zero-copy from numpy)."""
    import numpy as np
    import torch
    if isinstance(batch, dict):
        return {k: place_batch(v, placement) for k, v in batch.items()}
    t = torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch
    if placement.device == "cpu" and t.device.type == "cpu":
        return t
    return t.to(placement.device, non_blocking=t.is_pinned())


_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def autocast(placement: Placement = CPU):
    """The forward pass's autocast for the placement; fp32 is no autocast at all (the CPU default path is unchanged)."""
    if placement.precision == "fp32":
        return contextlib.nullcontext()
    import torch
    return torch.autocast(device_type=placement.device.split(":")[0], dtype=getattr(torch, _DTYPES[placement.precision]))


def grad_scaler(placement: Placement = CPU):
    """fp16 needs loss scaling (its range underflows small gradients); bf16 and fp32 do not: a disabled scaler."""
    import torch
    return torch.amp.GradScaler(placement.device.split(":")[0], enabled=placement.precision == "fp16")


def synchronize(placement: Placement = CPU) -> None:
    """Wait for queued GPU work (timings and peak memory are only true after it)."""
    import torch
    if placement.device.startswith("cuda"):
        torch.cuda.synchronize(placement.device)
    elif placement.device == "mps":
        torch.mps.synchronize()

