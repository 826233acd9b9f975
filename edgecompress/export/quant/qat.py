"""Quantization-aware training: fake-quant fine-tuning under distillation, before any exporter runs.

Why eager fake-quant and not prepare_qat_pt2e: one quantized torch model cannot feed all three formats (DESIGN),
but *weights trained to sit well on the int8 grid* can. Every nn.Linear is wrapped so its forward sees
per-channel symmetric int8 weights and u8 activations (dynamic: per batch min/max; static: running min/max, the
ranges a static calibration will find), with straight-through gradients (torch.fake_quantize_*). After training
the wrappers are removed and each exporter applies its own int8 (onnxruntime, PT2E XNNPACK, quantize_dynamic) to
the QAT weights, so QAT reaches every int8 format.

Distillation: the loss is compress.distill.kd_loss against a teacher's logits. The exporter API hands no teacher,
so by default the teacher is the fp32 model itself (self-distillation: QAT's job is to make the int8 model compute
what the fp32 student computes, which is exactly what the reports measure); pass `teacher=` to distil from another.
Without labels, the teacher's argmax serves as the label (CE then also pulls towards the fp32 decision).

Placement: QAT trains on the run's device but always in fp32: it simulates int8 rounding, and bf16/fp16 autocast
would add its own rounding on top of the grid it is learning (and torch's fake_quantize kernels take fp32). So a
QAT export's id never depends on compute.precision, and the model comes back on the CPU for the exporter.
"""
from __future__ import annotations

import copy
from typing import Optional

import numpy as np

from edgecompress.recipe import KD_ALPHA, KD_TEMPERATURE


def _fq_weight(w, per_channel: bool):
    import torch
    if per_channel:
        amax = w.detach().abs().amax(dim=1).clamp_min(1e-8)
        scale = (amax / 127.0).float()
        zp = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, -127, 127)
    amax = float(w.detach().abs().max().clamp_min(1e-8))
    return torch.fake_quantize_per_tensor_affine(w, amax / 127.0, 0, -127, 127)


def _fq_act(x, lo: float, hi: float):
    import torch
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / 255.0, 1e-8)
    zp = int(round(-lo / scale))
    return torch.fake_quantize_per_tensor_affine(x, scale, min(max(zp, 0), 255), 0, 255)


def fake_quant_linear(linear, static: bool = False, per_channel: bool = True, momentum: float = 0.9):
    """nn.Linear -> a module computing linear(fq(x), fq(W)) + b; `.inner` is the original Linear (weights shared)."""
    import torch

    class FakeQuantLinear(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.static, self.per_channel = static, per_channel
            self.register_buffer("lo", torch.tensor(float("inf")))
            self.register_buffer("hi", torch.tensor(float("-inf")))

        def forward(self, x):
            if self.static:
                if self.training or not torch.isfinite(self.lo):
                    lo, hi = x.detach().min(), x.detach().max()
                    if torch.isfinite(self.lo):
                        lo, hi = momentum * self.lo + (1 - momentum) * lo, momentum * self.hi + (1 - momentum) * hi
                    self.lo.copy_(lo)
                    self.hi.copy_(hi)
                xq = _fq_act(x, float(self.lo), float(self.hi))
            else:
                xq = _fq_act(x, float(x.detach().min()), float(x.detach().max()))
            return torch.nn.functional.linear(xq, _fq_weight(self.inner.weight, self.per_channel), self.inner.bias)

    return FakeQuantLinear(linear)


def linear_names(model, include_classifier: bool = True) -> list[str]:
    import torch
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
            and (include_classifier or not n.endswith("classifier"))]


def _set(model, name: str, new) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def wrap(model, names: Optional[list[str]] = None, static: bool = False, per_channel: bool = True):
    """In place: wrap the named Linears (all when None) with fake quant. Returns the model."""
    for n in (linear_names(model) if names is None else names):
        _set(model, n, fake_quant_linear(model.get_submodule(n), static, per_channel))
    return model


def unwrap(model):
    """In place: put the original Linears back (with their trained weights)."""
    for n, m in list(model.named_modules()):
        if type(m).__name__ == "FakeQuantLinear":
            _set(model, n, m.inner)
    return model


def qat_finetune(model, batches: list, cfg, *, teacher=None, static: bool = False, per_channel: bool = True,
                 val_batches: Optional[list] = None, alpha: float = KD_ALPHA, temperature: float = KD_TEMPERATURE,
                 seed: int = 0, placement=None):
    """A fine-tuned deep copy of model (fp32 weights adapted to the int8 grid) and the training history.

    batches: [(inputs, labels or None, row_idx)] (labels None -> the teacher's argmax); cfg: recipe.TrainCfg
    (epochs, learning_rate, batch_size is the caller's batching, max_train_samples applied by the caller)."""
    import dataclasses

    import torch
    from edgecompress.compress.distill import kd_loss
    from edgecompress.compress.train import to_torch, train
    from edgecompress.compute import CPU, on_device
    placement = dataclasses.replace(placement or CPU, precision="fp32")

    teacher = copy.deepcopy(model).eval() if teacher is None else teacher.eval()

    def teacher_logits(inputs):
        with torch.no_grad():
            return teacher(**to_torch(inputs)).logits

    def labelled(bs):
        out = []
        for i, (inputs, y, idx) in enumerate(bs):
            if y is None:
                y = teacher_logits(inputs).argmax(-1).numpy()
            out.append((inputs, np.asarray(y, dtype=np.int64),
                        np.asarray(idx) if idx is not None else np.arange(len(y)) + 10_000 * i))
        return out

    train_b = labelled(batches)
    val_b = labelled(val_batches) if val_batches else train_b[: max(1, len(train_b) // 8)]
    # accuracy() indexes rows by row_idx: give validation rows a dense 0..n-1 index
    fixed, start = [], 0
    for x, y, _ in val_b:
        fixed.append((x, y, np.arange(start, start + len(y))))
        start += len(y)
    student = wrap(copy.deepcopy(model), static=static, per_channel=per_channel)

    def loss_fn(m, inputs, labels, idx):
        with torch.no_grad():
            t = teacher(**inputs).logits
        return kd_loss(m(**inputs).logits, t, labels, alpha, temperature)

    with on_device(teacher, placement):
        res = train(student, lambda e: train_b, loss_fn, cfg, fixed, "qat", seed, select_best=True, placement=placement)
    return unwrap(student).eval(), res
