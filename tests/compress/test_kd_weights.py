"""A recipe's KD weights (its distill stage's alpha and temperature) are the loss of every later training under
distillation: recovery after pruning or trimming, and QAT."""
from __future__ import annotations

import pytest

from edgecompress.recipe import KDLoss, TrainCfg, parse_recipe
from edgecompress.zoo import save_tiny_teacher, write_small_vader

WEIGHTS = {"alpha": 0.9, "temperature": 4.0}


@pytest.fixture
def kd_calls(monkeypatch):
    """Every (alpha, temperature) the KD loss is called with."""
    import edgecompress.compress.distill as distill
    import edgecompress.compress.kd as kd
    calls, real = [], kd.kd_loss

    def spy(s, t, y, alpha=None, temperature=None):
        calls.append((alpha, temperature))
        return real(s, t, y, alpha, temperature)
    monkeypatch.setattr(kd, "kd_loss", spy)
    monkeypatch.setattr(distill, "kd_loss", spy)
    return calls


def _session(tmp_path, recipe):
    from edgecompress.engine import Engine
    from edgecompress.plan import make_plan
    from edgecompress.steps import Session
    return Session(make_plan(recipe), Engine(tmp_path / "run"))


def test_the_run_hands_its_kd_weights_to_the_stages_and_the_exporters(tmp_path):
    # setup
    recipe = parse_recipe({"teacher": {"source": str(save_tiny_teacher(tmp_path / "t"))},
                           "data": {"source": str(write_small_vader(tmp_path / "d")), "max_seq_len": 64},
                           "export": {"max_seq_len": 64, "formats": ["onnx"]}, "bench": {"seq_len": 32},
                           "stages": [{"kind": "distill", "student": {"from_teacher_layers": [0]}, **WEIGHTS},
                                      {"kind": "prune", "recovery": {"epochs": 1}}]})
    # execute
    session = _session(tmp_path, recipe)
    # assert
    assert recipe.kd == KDLoss(**WEIGHTS)
    assert session.ctx.kd == KDLoss(**WEIGHTS)
    assert session.calib_data(None, object()).kd == KDLoss(**WEIGHTS)


def test_recovery_trains_on_the_context_kd_weights(small_splits, tiny_vocab_bert, minilm_tokenizer, kd_calls):
    # setup
    from edgecompress.compress.base import StageContext, Teacher
    from edgecompress.compress.kd import recover
    ctx = StageContext(small_splits, 32, kd=KDLoss(**WEIGHTS))
    teacher = Teacher(tiny_vocab_bert, minilm_tokenizer)
    student = __import__("copy").deepcopy(tiny_vocab_bert)
    # execute
    recover(student, minilm_tokenizer, TrainCfg(epochs=1, max_train_samples=32, batch_size=16), ctx, teacher, "test")
    # assert
    assert kd_calls and set(kd_calls) == {(0.9, 4.0)}


def test_qat_trains_on_the_calibration_data_kd_weights(small_splits, tiny_vocab_bert, minilm_tokenizer, kd_calls):
    # setup
    from edgecompress.data import batches
    from edgecompress.export.quant import prepare_torch
    from edgecompress.export.quant.calibration import CalibData
    from edgecompress.recipe import QuantSpec
    rows = lambda: batches(minilm_tokenizer, small_splits["train"].subset(32, 0), 16, 32, shuffle=False)  # noqa: E731
    calib = CalibData(inputs=lambda: (b[0] for b in rows()), train=rows, kd=KDLoss(**WEIGHTS))
    quant = QuantSpec(qat=TrainCfg(epochs=1, batch_size=16, max_train_samples=32))
    # execute
    prepare_torch(tiny_vocab_bert, quant, calib, embeddings_default=False)
    # assert
    assert kd_calls and set(kd_calls) == {(0.9, 4.0)}
