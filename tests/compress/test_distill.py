import math

import numpy as np
import pytest
import torch

from edgecompress.compress.base import StageContext, Teacher
from edgecompress.compress.distill import distill
from edgecompress.compress.kd import kd_loss
from edgecompress.errors import UserInputError
from edgecompress.modeling import student_from_teacher_layers
from edgecompress.recipe import DistillCfg, StudentCfg, TrainCfg


def test_kd_loss_matches_hand_computed_value():
    # setup: one row, two classes, numbers small enough to do by hand
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 2.0]])
    y = torch.tensor([0])
    T, alpha = 2.0, 0.25
    # execute
    loss, parts = kd_loss(s, t, y, alpha, T)
    # assert: CE = log(1+e^-1); KL(pt||ps) at T=2 scaled by T^2
    ce = math.log(1 + math.exp(-1.0))
    ps = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]
    pt = [1 / (1 + math.e), math.e / (1 + math.e)]
    kl = sum(p * math.log(p / q) for p, q in zip(pt, ps)) * T * T
    assert parts["ce"] == pytest.approx(ce, rel=1e-5)
    assert parts["kd"] == pytest.approx(kl, rel=1e-5)
    assert float(loss) == pytest.approx(alpha * ce + (1 - alpha) * kl, rel=1e-5)


def test_kd_loss_is_zero_kd_when_student_equals_teacher():
    # setup
    z = torch.randn(4, 3)
    # execute
    _, parts = kd_loss(z, z.clone(), torch.tensor([0, 1, 2, 0]), 0.0, 3.0)
    # assert
    assert parts["kd"] == pytest.approx(0.0, abs=1e-6)


def test_kd_has_one_set_of_defaults():
    # setup
    import inspect
    from edgecompress.export.quant.qat import qat_finetune
    from edgecompress.recipe import KD_ALPHA, KD_TEMPERATURE
    s, t, y = torch.randn(4, 2), torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    # execute
    default, _ = kd_loss(s, t, y)
    explicit, _ = kd_loss(s, t, y, KD_ALPHA, KD_TEMPERATURE)
    qat = inspect.signature(qat_finetune).parameters
    # assert: the loss, the distill stage and QAT all default to the recipe's constants
    assert float(default) == float(explicit)
    assert (DistillCfg().alpha, DistillCfg().temperature) == (KD_ALPHA, KD_TEMPERATURE)
    assert (qat["alpha"].default, qat["temperature"].default) == (KD_ALPHA, KD_TEMPERATURE)


def test_student_from_teacher_layers_copies_the_chosen_layers(tiny_vocab_bert):
    # execute
    student = student_from_teacher_layers(tiny_vocab_bert, [1])
    # assert
    assert student.config.num_hidden_layers == 1
    t1 = tiny_vocab_bert.bert.encoder.layer[1].attention.self.query.weight
    assert torch.equal(student.bert.encoder.layer[0].attention.self.query.weight, t1)
    assert torch.equal(student.classifier.weight, tiny_vocab_bert.classifier.weight)


def test_wrong_layer_map_fails_before_training_naming_the_layer(tiny_vocab_bert):
    # execute / assert
    with pytest.raises(UserInputError, match="layer 5 does not exist"):
        student_from_teacher_layers(tiny_vocab_bert, [0, 5])


def test_tiny_distillation_reduces_kd_loss(tiny_vocab_bert, minilm_tokenizer, small_splits):
    # setup: a teacher that knows something (a few steps of fine-tuning), a 1-layer student
    from edgecompress.compress.finetune import finetune
    ctx = StageContext(small_splits, 64, seed=0)
    torch.manual_seed(0)
    teacher = finetune(tiny_vocab_bert, minilm_tokenizer, TrainCfg(epochs=1, learning_rate=1e-3, batch_size=16), ctx).model
    cfg = DistillCfg(student=StudentCfg(from_teacher_layers=[0]), alpha=0.0, temperature=2.0,
                     train=TrainCfg(epochs=2, learning_rate=2e-3, batch_size=16, warmup_ratio=0.0))
    # execute
    res = distill(teacher, minilm_tokenizer, cfg, ctx, Teacher(teacher, minilm_tokenizer))
    # assert
    hist = res.metrics["history"]
    assert hist[-1]["train_loss_last_10pct"] < hist[0]["train_loss_first"]
    assert res.model.config.num_hidden_layers == 1 and res.tokenizer is minilm_tokenizer
    assert 0.0 <= res.metrics["test_accuracy"] <= 1.0
