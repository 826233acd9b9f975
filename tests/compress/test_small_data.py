"""Distillation on small data: augmented variants (KD only), a length in steps, a student that reads a trimmed
vocabulary from its first step."""
import numpy as np
import pytest
import torch

from edgecompress.compress.augment import IGNORE_LABEL, augmented
from edgecompress.compress.base import StageContext, Teacher
from edgecompress.compress.distill import distill
from edgecompress.compress.kd import kd_loss
from edgecompress.compress.train import _split_epochs
from edgecompress.recipe import DistillCfg, StudentCfg, TrainCfg
from edgecompress.stage_configs import AugmentCfg


def test_augmented_split_grows_to_rows_with_unlabelled_variants(small_splits):
    # setup
    train = small_splits["train"]
    cfg = AugmentCfg(rows=1000, mask_prob=0.15, replace_prob=0.1)
    # execute
    grown, info = augmented(train, cfg, "[MASK]", seed=3)
    again, _ = augmented(train, cfg, "[MASK]", seed=3)
    # assert: originals first and untouched, variants unlabelled and each different from every original it copies
    n = len(train)
    assert len(grown) == 1000 and info["variants"] == 1000 - n
    assert grown.texts[:n] == train.texts and (grown.labels[:n] == train.labels).all()
    assert (grown.labels[n:] == IGNORE_LABEL).all()
    assert grown.texts == again.texts  # seeded
    originals = set(train.texts)
    assert sum(t in originals for t in grown.texts[n:]) < 0.02 * (1000 - n)
    assert any("[MASK]" in t for t in grown.texts[n:])


def test_a_large_split_is_left_alone(small_splits):
    # execute
    same, info = augmented(small_splits["train"], AugmentCfg(rows=10), "[MASK]")
    # assert
    assert same is small_splits["train"] and info["variants"] == 0


def test_kd_loss_skips_ce_for_unlabelled_rows():
    # setup
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, 2, IGNORE_LABEL, IGNORE_LABEL])
    # execute
    _, parts = kd_loss(s, t, y, 0.5, 2.0)
    _, only = kd_loss(s[:2], t[:2], y[:2], 0.5, 2.0)
    _, none = kd_loss(s[2:], t[2:], y[2:], 0.5, 2.0)
    # assert: CE over the labelled rows only; a batch of variants has CE 0, not NaN
    assert parts["ce"] == pytest.approx(only["ce"], rel=1e-6)
    assert none["ce"] == 0.0 and np.isfinite(none["kd"])


@pytest.mark.parametrize("epochs,min_steps,expected", [(1.0, None, 10), (1.0, 25, 25), (3.0, 25, 30)])
def test_min_steps_adds_epochs_to_a_short_run(epochs, min_steps, expected):
    # setup: 10 batches an epoch
    make = lambda e: list(range(10))  # noqa: E731
    # execute
    plan = _split_epochs(make, TrainCfg(epochs=epochs, min_steps=min_steps), 1, 0)
    # assert
    assert sum(len(b) for b in plan) == expected


def test_student_reads_a_trimmed_vocabulary_from_its_first_step(tiny_vocab_bert, minilm_tokenizer, small_splits):
    # setup
    ctx = StageContext(small_splits, 64, seed=0)
    teacher = Teacher(tiny_vocab_bert, minilm_tokenizer)
    cfg = DistillCfg(student=StudentCfg(from_teacher_layers=[0], vocab={"min_count": 2}),
                     augment=AugmentCfg(rows=500), train=TrainCfg(epochs=1, learning_rate=1e-3, batch_size=16))
    # execute
    res = distill(tiny_vocab_bert, minilm_tokenizer, cfg, ctx, teacher)
    # assert: a smaller table and its own tokenizer; the teacher's tokenizer untouched; augmentation reported
    n = res.metrics["vocab"]["vocab_size"]
    assert n < 5000 and len(res.tokenizer) == n == res.model.get_input_embeddings().num_embeddings
    assert len(minilm_tokenizer) == 30522
    assert res.metrics["augment"]["rows"] == 500
    assert res.metrics["history"][0]["steps"] == -(-500 // 16)
    assert 0.0 <= res.metrics["test_accuracy"] <= 1.0


def test_trimmed_student_vocabulary_with_matches_is_refused():
    # execute / assert
    with pytest.raises(ValueError, match="student.vocab"):
        DistillCfg(student=StudentCfg(vocab={"max_tokens": 500}),
                   matches=[{"teacher_layer": 0, "student_layer": 0, "feature": "hidden"}])


def test_max_tokens_keeps_the_most_frequent_tokens(minilm_tokenizer):
    # setup
    from collections import Counter
    from edgecompress.compress.vocabulary import kept_ids
    counts = Counter({2000: 9, 2001: 5, 2002: 5, 2003: 1})
    # execute
    capped = kept_ids(minilm_tokenizer, counts, 1, max_tokens=2)
    floor = kept_ids(minilm_tokenizer, counts, 5)
    # assert: specials always; the cap takes the most frequent
    specials = set(minilm_tokenizer.all_special_ids)
    assert set(capped) - specials == {2000, 2001} and set(floor) - specials == {2000, 2001, 2002}


def test_coverage_rule_trims_to_the_fewest_tokens_or_keeps_the_whole_table(small_splits, minilm_tokenizer):
    # setup
    from edgecompress.compress.vocabulary import token_counts, tokens_for_coverage
    train, val = small_splits["train"].texts, small_splits["validation"].texts
    counts = token_counts(minilm_tokenizer, train)
    # execute
    loose, loose_unseen = tokens_for_coverage(minilm_tokenizer, counts, val, 0.5)
    tight, tight_unseen = tokens_for_coverage(minilm_tokenizer, counts, val, 1e-6)
    # assert: a loose bound takes a few of the most frequent tokens; one the corpus cannot meet keeps nothing out
    assert loose is not None and loose < len(counts) and loose_unseen <= 0.5
    assert tight is None and tight_unseen > 0.0


def test_distill_keeps_the_teachers_table_when_the_corpus_cannot_cover_validation(tiny_vocab_bert, minilm_tokenizer,
                                                                                   small_splits):
    # setup: 320 train rows cannot leave only 0.1% of validation tokens unseen
    ctx = StageContext(small_splits, 64, seed=0)
    cfg = DistillCfg(student=StudentCfg(from_teacher_layers=[0], vocab={"max_unseen": 0.001}),
                     train=TrainCfg(epochs=1, learning_rate=1e-3, batch_size=32))
    # execute
    res = distill(tiny_vocab_bert, minilm_tokenizer, cfg, ctx, Teacher(tiny_vocab_bert, minilm_tokenizer))
    # assert
    assert res.metrics["vocab"]["trimmed"] is False and res.tokenizer is minilm_tokenizer
    assert res.model.get_input_embeddings().num_embeddings == 30522
