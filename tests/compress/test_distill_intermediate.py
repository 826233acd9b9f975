"""Intermediate-layer distillation: loss terms by hand, students from a config, layer-map validation, schedules,
early stopping, multi-class."""
import math

import numpy as np
import pytest
import torch

from edgecompress.compress.base import StageContext, Teacher
from edgecompress.compress.distill import attention_loss, distill, hidden_loss
from edgecompress.compress.train import train
from edgecompress.data import Split
from edgecompress.errors import UserInputError
from edgecompress.modeling import student_from_config
from edgecompress.recipe import DistillCfg, MatchCfg, StudentArchCfg, StudentCfg, TrainCfg


def test_hidden_mse_with_identity_projection_matches_hand_computed_value():
    # setup: 1 row, 2 tokens, width 2; the second token is padding
    s = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    t = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    proj = torch.nn.Linear(2, 2)
    with torch.no_grad():
        proj.weight.copy_(torch.eye(2))
        proj.bias.zero_()
    # execute
    both = hidden_loss(proj(s), t, torch.tensor([[1, 1]]))
    first = hidden_loss(proj(s), t, torch.tensor([[1, 0]]))
    # assert: token 0 -> (0 + 4) / 2 = 2, token 1 -> (9 + 16) / 2 = 12.5
    assert float(both.detach()) == pytest.approx((2 + 12.5) / 2)
    assert float(first.detach()) == pytest.approx(2.0)


def test_hidden_cosine_is_zero_for_parallel_vectors():
    # setup
    s = torch.tensor([[[1.0, 2.0]]])
    # execute / assert
    assert float(hidden_loss(s, 3 * s, torch.tensor([[1]]), "cosine")) == pytest.approx(0.0, abs=1e-6)


def test_attention_kl_on_a_2x2_example_matches_hand_computed_value():
    # setup: 1 row, 1 head, 2 tokens: rows are distributions over keys
    s = torch.tensor([[[[0.5, 0.5], [0.9, 0.1]]]])
    t = torch.tensor([[[[0.25, 0.75], [1.0, 0.0]]]])
    # execute
    kl = attention_loss(s, t, torch.tensor([[1, 1]]), "kl")
    mse = attention_loss(s, t, torch.tensor([[1, 1]]), "mse")
    # assert: KL(t||s) per row, averaged over rows; 0*log0 = 0
    row0 = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    row1 = 1.0 * math.log(1.0 / 0.9)
    assert float(kl) == pytest.approx((row0 + row1) / 2, rel=1e-5)
    assert float(mse) == pytest.approx((0.0625 + 0.0625 + 0.01 + 0.01) / 4, rel=1e-5)


def test_attention_kl_ignores_padded_query_rows_and_averages_heads_when_counts_differ():
    # setup: query row 1 is padding (its key column carries no mass in either row 0)
    s = torch.tensor([[[[1.0, 0.0], [0.2, 0.8]]]])
    t = torch.tensor([[[[1.0, 0.0], [0.9, 0.1]]]])
    # execute
    kl = attention_loss(s, t, torch.tensor([[1, 0]]))
    two_heads = attention_loss(s.repeat(1, 2, 1, 1), t, torch.tensor([[1, 1]]))
    # assert
    assert float(kl) == pytest.approx(0.0, abs=1e-6)
    assert float(two_heads) == pytest.approx(float(attention_loss(s, t, torch.tensor([[1, 1]]))), rel=1e-6)


def test_student_from_config_builds_the_right_shapes_from_a_consistent_slice(tiny_vocab_bert):
    # setup
    arch = StudentArchCfg(num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=20,
                          init_from_teacher_layers=[1])
    # execute
    s = student_from_config(tiny_vocab_bert, arch)
    # assert
    c = s.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (1, 16, 2, 20)
    assert s.bert.embeddings.word_embeddings.weight.shape == (30522, 16)
    assert s.bert.encoder.layer[0].attention.self.query.weight.shape == (16, 16)
    assert s.bert.encoder.layer[0].intermediate.dense.weight.shape == (20, 16)
    assert s.classifier.weight.shape == (2, 16)
    hid = torch.tensor(s.init_report["hidden_dims"])
    assert torch.equal(s.bert.embeddings.word_embeddings.weight, tiny_vocab_bert.bert.embeddings.word_embeddings.weight[:, hid])
    assert s.init_report["random_init"] == []
    assert s(input_ids=torch.tensor([[101, 2000, 102]])).logits.shape == (1, 2)


def test_student_from_config_defaults_keep_head_size_and_ffn_ratio(tiny_vocab_bert):
    # execute: hidden 16 of 32, heads/FFN derived (head size 8 kept -> 2 heads; FFN 37 * 16/32 -> 18)
    s = student_from_config(tiny_vocab_bert, StudentArchCfg(num_hidden_layers=2, hidden_size=16))
    # assert
    assert (s.config.num_attention_heads, s.config.intermediate_size) == (2, 18)
    assert s.init_report["teacher_layers"] == [0, 1]


@pytest.fixture(scope="module")
def taught(minilm_tokenizer, small_splits):
    """A tiny teacher that knows something (one fine-tuning epoch), built once; tests get a deep copy."""
    from edgecompress.compress.finetune import finetune
    from edgecompress.zoo import tiny_bert_with_real_vocab
    torch.manual_seed(0)
    ctx = StageContext(small_splits, 64, seed=0)
    return finetune(tiny_bert_with_real_vocab(), minilm_tokenizer, TrainCfg(epochs=1, learning_rate=1e-3, batch_size=16),
                    ctx).model


def _teacher(taught, tokenizer) -> Teacher:
    import copy
    return Teacher(copy.deepcopy(taught), tokenizer)


MATCHES = [MatchCfg(teacher_layer=-1, student_layer=-1, feature="hidden", loss="mse", weight=1.0),
           MatchCfg(teacher_layer=1, student_layer=0, feature="hidden", loss="mse", weight=1.0),
           MatchCfg(teacher_layer=1, student_layer=0, feature="attention", loss="kl", weight=1.0)]


def test_tiny_distillation_with_intermediate_matches_reduces_the_loss(taught, minilm_tokenizer, small_splits):
    # setup: a narrower 1-layer student (width 16 vs 32: the hidden matches go through a projection)
    ctx = StageContext(small_splits, 64, seed=0)
    teacher = _teacher(taught, minilm_tokenizer)
    cfg = DistillCfg(student=StudentCfg(config=StudentArchCfg(num_hidden_layers=1, hidden_size=16)),
                     alpha=0.0, matches=MATCHES,
                     train=TrainCfg(epochs=2, learning_rate=2e-3, batch_size=16, warmup_ratio=0.0))
    # execute
    res = distill(teacher.model, minilm_tokenizer, cfg, ctx, teacher)
    # assert
    student, hist = res.model, res.metrics["history"]
    assert hist[-1]["train_loss_last_10pct"] < hist[0]["train_loss_first"]
    assert res.metrics["projection_params_dropped"] == 2 * (16 * 32 + 32)
    assert not any("proj" in k for k in student.state_dict())
    assert student.config.hidden_size == 16
    assert student.config._attn_implementation != "eager" and teacher.model.config._attn_implementation != "eager"


def test_two_phase_schedule_trains_intermediate_then_logits(taught, minilm_tokenizer, small_splits):
    # setup
    ctx = StageContext(small_splits, 64, seed=0)
    teacher = _teacher(taught, minilm_tokenizer)
    cfg = DistillCfg(student=StudentCfg(from_teacher_layers=[1]), matches=MATCHES[1:2], schedule="two_phase",
                     intermediate_epochs=0.5, train=TrainCfg(epochs=1, learning_rate=2e-3, batch_size=16,
                                                             max_train_samples=128))
    # execute
    res = distill(teacher.model, minilm_tokenizer, cfg, ctx, teacher)
    # assert
    assert [h["phase"] for h in res.metrics["history"]] == ["intermediate", "logits"]


def test_wrong_layer_map_fails_in_the_stage_before_training(tiny_vocab_bert, minilm_tokenizer, small_splits):
    # setup
    ctx = StageContext(small_splits, 64, seed=0)
    teacher = Teacher(tiny_vocab_bert, minilm_tokenizer)
    cfg = DistillCfg(student=StudentCfg(from_teacher_layers=[0]),
                     matches=[MatchCfg(teacher_layer=5, student_layer=0, feature="hidden")])
    # execute / assert
    with pytest.raises(UserInputError, match=r"matches\[0\]\.teacher_layer: layer 5 does not exist"):
        distill(tiny_vocab_bert, minilm_tokenizer, cfg, ctx, teacher)
    bad_student = cfg.model_copy(update={"matches": [MatchCfg(teacher_layer=0, student_layer=1, feature="attention")]})
    with pytest.raises(UserInputError, match=r"student_layer: layer 1 does not exist; the student has layers 0..0"):
        distill(tiny_vocab_bert, minilm_tokenizer, bad_student, ctx, teacher)
    with pytest.raises(UserInputError, match="distill needs a teacher"):
        distill(tiny_vocab_bert, minilm_tokenizer, cfg, ctx)


@pytest.mark.parametrize("match, message", [
    ({"teacher_layer": 2, "student_layer": 0, "feature": "hidden"}, r"matches\[0\]\.teacher_layer: layer 2 does not exist"),
    ({"teacher_layer": 0, "student_layer": 3, "feature": "hidden"}, r"matches\[0\]\.student_layer: layer 3 does not exist"),
    ({"teacher_layer": -1, "student_layer": -1, "feature": "attention"}, r"layer -1 is the embedding output"),
    ({"teacher_layer": 0, "student_layer": 0, "feature": "hidden", "loss": "kl"}, r"'kl' does not apply to hidden"),
])
def test_wrong_layer_map_fails_in_plan(tmp_path, match, message):
    # setup: a 2-layer teacher, a 1-layer student
    from edgecompress.plan import make_plan
    from edgecompress.recipe import parse_recipe
    from edgecompress.zoo import save_tiny_teacher, write_small_vader
    recipe = parse_recipe({
        "teacher": {"source": str(save_tiny_teacher(tmp_path / "t")), "finetune": None},
        "data": {"source": str(write_small_vader(tmp_path / "d", 40, 12)), "max_seq_len": 64},
        "stages": [{"kind": "distill", "student": {"from_teacher_layers": [1]}, "matches": [match]}],
        "export": {"formats": ["onnx"], "max_seq_len": 64}, "bench": {"seq_len": 32}})
    # execute / assert
    with pytest.raises(UserInputError, match=message):
        make_plan(recipe)


def test_three_class_distillation_runs(minilm_tokenizer, small_splits):
    # setup: 3 classes (nyt rows become class 2), a 3-label teacher and student
    from edgecompress.zoo import tiny_bert_with_real_vocab

    def three(s: Split) -> Split:
        y = np.where(np.array(s.domains) == "nyt", 2, s.labels)
        return Split(s.name, s.texts, y, s.domains, ["neg", "pos", "news"])
    splits = {k: three(v) for k, v in small_splits.items()}
    ctx = StageContext(splits, 64, seed=0)
    teacher = tiny_bert_with_real_vocab(num_labels=3)
    cfg = DistillCfg(student=StudentCfg(from_teacher_layers=[0]), matches=MATCHES[1:2],
                     train=TrainCfg(epochs=1, learning_rate=2e-3, batch_size=16, max_train_samples=128))
    # execute
    res = distill(teacher, minilm_tokenizer, cfg, ctx, Teacher(teacher, minilm_tokenizer))
    # assert
    assert res.model.config.num_labels == 3
    assert 0.0 <= res.metrics["test_accuracy"] <= 1.0


def test_early_stopping_stops_after_patience_epochs_without_gain(tiny_vocab_bert, minilm_tokenizer, small_splits):
    # setup: a learning rate too small to change the validation accuracy
    import torch.nn.functional as F
    ctx = StageContext(small_splits, 64, seed=0)
    loss_fn = lambda m, x, y, idx: (F.cross_entropy(m(**x).logits, y), {})  # noqa: E731
    make = lambda e: ctx.batches(minilm_tokenizer, "train", 64, shuffle=True, epoch=e, subset=64)  # noqa: E731
    # execute
    res = train(tiny_vocab_bert, make, loss_fn, TrainCfg(epochs=5, learning_rate=1e-12),
                ctx.batches(minilm_tokenizer, "validation", 64, shuffle=False), "t", patience=1)
    # assert
    assert res.stopped_early and len(res.history) == 2


def test_default_student_on_a_smaller_teacher_fails_in_plan_naming_the_field(tmp_path):
    # setup: the tiny 2-layer, width-32 teacher with the recipe's default student (4 layers, width 256)
    from edgecompress.plan import make_plan
    from edgecompress.recipe import parse_recipe
    from edgecompress.zoo import save_tiny_teacher, write_small_vader
    recipe = parse_recipe({
        "teacher": {"source": str(save_tiny_teacher(tmp_path / "t")), "finetune": None},
        "data": {"source": str(write_small_vader(tmp_path / "d", 40, 12)), "max_seq_len": 64},
        "stages": [{"kind": "distill"}],
        "export": {"formats": ["onnx"], "max_seq_len": 64}, "bench": {"seq_len": 32}})
    # execute / assert
    with pytest.raises(UserInputError, match=r"student\.config\.hidden_size 256 exceeds the teacher's 32") as e:
        make_plan(recipe)
    assert "\n" not in str(e.value)
