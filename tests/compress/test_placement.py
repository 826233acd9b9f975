"""Placement on the CPU: one mover for models (back where they came from, also on an error), one for batches, and
every model-over-data pass of the stages run under the placement's autocast (bf16 on the CPU stands in for a GPU's
precision: same code path, no GPU needed). CI has no GPU; device resolution is tested in tests/unit/test_compute.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgecompress.compress.base import StageContext, Teacher
from edgecompress.compute import CPU, Placement, on_device, pin, place_batch
from edgecompress.recipe import DistillCfg, MatchCfg, PruneCfg, StudentCfg, StructuredPruneCfg, TrainCfg, VocabTrimCfg
from edgecompress.registry import STAGES

BF16 = Placement("cpu", "bf16", "cpu")
TINY_TRAIN = TrainCfg(epochs=1, batch_size=32, max_train_samples=96)


class _Recorder(torch.nn.Module):
    """A module whose .to() is recorded, not performed (a CPU box cannot move anything to a GPU)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.moves: list[str] = []

    def to(self, device):
        self.moves.append(str(device))
        return self


def test_on_device_moves_the_model_there_and_back_even_when_the_pass_fails():
    # setup
    m = _Recorder()
    # execute
    with pytest.raises(RuntimeError):
        with on_device(m, Placement("cuda:0", "bf16", "GPU")):
            raise RuntimeError("out of memory")
    # assert
    assert m.moves == ["cuda:0", "cpu"]


def test_on_device_leaves_a_model_that_is_already_there_alone():
    # setup
    m = _Recorder()
    # execute
    with on_device(m, CPU):
        pass
    # assert
    assert m.moves == []


def test_a_cpu_batch_is_the_numpy_memory_itself_and_an_epoch_is_built_as_tensors_once():
    # setup
    ids = np.arange(6, dtype=np.int64).reshape(2, 3)
    batches = [({"input_ids": ids}, np.array([0, 1]), np.array([4, 5]))]
    # execute
    placed = place_batch({"input_ids": ids}, CPU)["input_ids"]
    epoch = pin(batches, CPU)
    # assert: zero-copy on the CPU (the default path costs nothing new); labels are tensors, row indices stay numpy
    assert placed.data_ptr() == ids.__array_interface__["data"][0]
    assert isinstance(epoch[0][0]["input_ids"], torch.Tensor) and not epoch[0][0]["input_ids"].is_pinned()
    assert isinstance(epoch[0][1], torch.Tensor) and isinstance(epoch[0][2], np.ndarray)


def test_on_cuda_an_epoch_is_pinned_once_and_each_batch_is_copied_without_blocking(monkeypatch):
    # setup: a CPU box cannot pin or copy to a GPU, so both are recorded instead
    gpu = Placement("cuda:0", "bf16", "GPU")
    pinned, copies = [], []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pinned.append(self.shape) or self)
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self: True)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: copies.append((a, k)) or self)
    batches = [({"input_ids": np.zeros((2, 3), dtype=np.int64), "attention_mask": np.ones((2, 3), dtype=np.int64)},
                np.array([0, 1]), np.array([0, 1]))]
    # execute
    epoch = pin(batches, gpu)
    inputs = place_batch(epoch[0][0], gpu)
    # assert: inputs and labels pinned when the epoch is built; each copy to the GPU is asynchronous
    assert len(pinned) == 3 and set(inputs) == {"input_ids", "attention_mask"}
    assert copies == [(("cuda:0",), {"non_blocking": True})] * 2


def test_autocast_follows_the_placement_and_fp32_is_no_autocast_at_all():
    # setup
    import contextlib
    import warnings
    from edgecompress.compute import autocast
    # execute
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CUDA autocast built on a CPU-only torch warns that it is disabled
        gpu = autocast(Placement("cuda:1", "fp16", "GPU"))
    cpu = autocast(CPU)
    # assert
    assert (gpu.device, gpu.fast_dtype) == ("cuda", torch.float16)
    assert isinstance(cpu, contextlib.nullcontext)


def _watch(model, seen: list):
    """Record, for every forward of `model`, whether it ran under CPU autocast."""
    return model.register_forward_pre_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))


def _stage_cfgs():
    return {
        "distill": DistillCfg(student=StudentCfg(from_teacher_layers=[0]), train=TINY_TRAIN, matches=[
            MatchCfg(feature="hidden", teacher_layer=1, student_layer=0),
            MatchCfg(feature="attention", teacher_layer=1, student_layer=0)]),
        "prune": PruneCfg(method="taylor", sparsity=0.3, calibration_batches=2, recovery=TINY_TRAIN),
        "prune_structured": StructuredPruneCfg(heads_fraction=0.25, ffn_fraction=0.25, calibration_batches=2,
                                               recovery=TINY_TRAIN),
        "trim_vocab": VocabTrimCfg(recovery=TINY_TRAIN),
    }


@pytest.mark.parametrize("name", ["distill", "prune", "prune_structured", "trim_vocab"])
def test_every_pass_of_a_stage_runs_under_the_placement_and_the_model_comes_back_on_the_cpu(
        tiny_vocab_bert, minilm_tokenizer, small_splits, name):
    # setup: the teacher is a copy, so its forwards are told apart from the student's
    import copy
    ctx = StageContext(dict(small_splits), 64, seed=0, placement=BF16)
    teacher_model = copy.deepcopy(tiny_vocab_bert)
    student_seen, teacher_seen = [], []
    hooks = [_watch(teacher_model, teacher_seen)] + ([] if name == "distill" else [_watch(tiny_vocab_bert, student_seen)])
    # execute
    res = STAGES.get(name)(tiny_vocab_bert if name != "distill" else teacher_model, minilm_tokenizer,
                           _stage_cfgs()[name], ctx, Teacher(teacher_model, minilm_tokenizer))
    for h in hooks:
        h.remove()
    # assert: every forward (training, teacher logits, importance, validation, test accuracy) under bf16 autocast ...
    assert teacher_seen and all(teacher_seen)
    assert name == "distill" or (student_seen and all(student_seen))
    # ... and what the stage returns is an fp32 CPU model with finite weights, like a CPU run's
    params = list(res.model.parameters())
    assert {p.device.type for p in params} == {"cpu"} and {p.dtype for p in params} == {torch.float32}
    assert all(torch.isfinite(p).all() for p in params)
    assert 0.0 <= res.metrics["test_accuracy"] <= 1.0


def test_teacher_fine_tuning_trains_under_the_placement(tiny_vocab_bert, minilm_tokenizer, small_splits):
    # setup
    from edgecompress.compress.finetune import finetune
    ctx = StageContext(dict(small_splits), 64, seed=0, placement=BF16)
    seen: list = []
    hook = _watch(tiny_vocab_bert, seen)
    # execute
    res = finetune(tiny_vocab_bert, minilm_tokenizer, TINY_TRAIN, ctx)
    hook.remove()
    # assert
    assert seen and all(seen) and res.metrics["history"][0]["steps"] == 3
    assert next(res.model.parameters()).dtype == torch.float32


def test_qat_trains_on_the_placement_but_always_in_fp32(tiny_vocab_bert, minilm_tokenizer, small_splits):
    # setup: fake quantization is the rounding QAT learns; autocast would add its own on top
    from edgecompress.export.quant.qat import qat_finetune
    ctx = StageContext(dict(small_splits), 64, seed=0, placement=BF16)
    batches = ctx.batches(minilm_tokenizer, "train", 32, shuffle=True, subset=64)
    seen: list = []
    hook = _watch(tiny_vocab_bert, seen)  # the model itself is QAT's teacher (self-distillation)
    # execute
    model, res = qat_finetune(tiny_vocab_bert, batches, TINY_TRAIN, placement=BF16)
    hook.remove()
    # assert
    assert seen and not any(seen)
    assert res.history and next(model.parameters()).device.type == "cpu"


def test_a_split_is_tokenized_once_per_tokenizer_and_gives_the_same_batches(minilm_tokenizer, small_splits):
    # setup
    from edgecompress.data import batches
    ctx = StageContext(dict(small_splits), 64, seed=0)
    calls = []
    real = minilm_tokenizer.__class__.__call__

    def counting(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)
    # execute
    import unittest.mock
    with unittest.mock.patch.object(minilm_tokenizer.__class__, "__call__", counting):
        per_epoch = [ctx.batches(minilm_tokenizer, "train", 32, shuffle=True, epoch=e) for e in range(3)]
    direct = batches(minilm_tokenizer, small_splits["train"], 32, 64, shuffle=True, seed=2)
    # assert: one tokenization for three epochs, and the third epoch is what uncached batching gives
    assert len(calls) == 1
    assert len(direct) == len(per_epoch[2])
    for (x1, y1, i1), (x2, y2, i2) in zip(direct, per_epoch[2]):
        assert (x1["input_ids"] == x2["input_ids"]).all() and (y1 == y2).all() and (i1 == i2).all()
