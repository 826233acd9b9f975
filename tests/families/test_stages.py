"""The family x stage contract: every stage runs on a tiny model of every supported family, shrinks what it says it
shrinks, and leaves a model that still runs and reloads from save_pretrained() with the same outputs."""
from __future__ import annotations

import pytest
import torch

from edgecompress.compress.base import StageContext, Teacher
from edgecompress.compress.distill import distill
from edgecompress.compress.prune import encoder_linears, prune, sparsity
from edgecompress.compress.structured import heads_per_layer, prune_structured
from edgecompress.compress.vocab import trim_vocab
from edgecompress.errors import UserInputError
from edgecompress.families import attr, family_for, family_of
from edgecompress.modeling import count_params, student_from_teacher_layers
from edgecompress.recipe import (DistillCfg, MatchCfg, PruneCfg, StructuredPruneCfg, StudentArchCfg, StudentCfg,
                                 TrainCfg, VocabTrimCfg)
from edgecompress.zoo import FAMILIES

TRAIN = TrainCfg(epochs=1, learning_rate=1e-3, batch_size=16, max_train_samples=48)
TEXTS = ["not bad at all", "worst movie ever, I want my money back!!", "a great day"]


def _logits(model, tokenizer, texts):
    enc = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits


def _assert_runs_and_reloads(res, tmp_path):
    """The result is finite and a save_pretrained -> from_pretrained round trip rebuilds it exactly."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    before = _logits(res.model, res.tokenizer, TEXTS)
    assert torch.isfinite(before).all()
    res.model.save_pretrained(str(tmp_path), safe_serialization=True)
    res.tokenizer.save_pretrained(str(tmp_path))
    model = AutoModelForSequenceClassification.from_pretrained(str(tmp_path), local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert count_params(model) == count_params(res.model)
    torch.testing.assert_close(_logits(model, tok, TEXTS), before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_student_from_teacher_layers_copies_the_chosen_layer(zoo, family):
    # setup
    teacher, _ = zoo.load(family)
    fam = family_for(family)
    # execute
    student = student_from_teacher_layers(teacher, [1])
    # assert: one layer, the teacher's layer 1 (tensors its position lacks, e.g. ModernBERT's first norm, excepted)
    assert fam.dims(student.config)["num_hidden_layers"] == 1 and len(fam.layer_list(student)) == 1
    t_sd = fam.layer_list(teacher)[1].state_dict()
    for k, v in fam.layer_list(student)[0].state_dict().items():
        torch.testing.assert_close(v, t_sd[k], atol=0, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_distill_from_teacher_layers(zoo, family, family_splits, tmp_path):
    # setup
    teacher, tok = zoo.load(family)
    model, _ = zoo.load(family)
    cfg = DistillCfg(student=StudentCfg(from_teacher_layers=[1]), train=TRAIN)
    # execute
    res = distill(model, tok, cfg, StageContext(family_splits, 64), Teacher(teacher, tok))
    # assert
    assert res.metrics["student_config"]["num_hidden_layers"] == 1
    assert res.metrics["params"] < res.metrics["teacher_params"]
    _assert_runs_and_reloads(res, tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
def test_distill_from_a_config_with_intermediate_matches(zoo, family, family_splits, tmp_path):
    # setup: narrower (2 heads of the teacher's head size 8), shallower, smaller FFN; hidden matches need a
    # projection (16 -> 32), the attention match compares 2 heads with 4
    teacher, tok = zoo.load(family)
    model, _ = zoo.load(family)
    matches = [MatchCfg(teacher_layer=-1, student_layer=-1, feature="hidden"),
               MatchCfg(teacher_layer=1, student_layer=0, feature="hidden"),
               MatchCfg(teacher_layer=1, student_layer=0, feature="attention", loss="kl")]
    cfg = DistillCfg(student=StudentCfg(config=StudentArchCfg(num_hidden_layers=1, hidden_size=16,
                                                              intermediate_size=20)), matches=matches, train=TRAIN)
    # execute
    res = distill(model, tok, cfg, StageContext(family_splits, 64), Teacher(teacher, tok))
    # assert: the shape asked for, every tensor sliced from the teacher (none left to random init)
    assert res.metrics["student_config"] == {"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2,
                                             "intermediate_size": 20}
    assert res.metrics["student_init"]["random_init"] == []
    assert res.metrics["projection_params_dropped"] == 2 * (16 * 32 + 32)
    _assert_runs_and_reloads(res, tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
def test_prune_zeroes_the_layer_linears_only(zoo, family, family_splits, tmp_path):
    # setup
    model, tok = zoo.load(family)
    fam = family_of(model)
    emb = model.get_input_embeddings().weight.detach().clone()
    # execute
    res = prune(model, tok, PruneCfg(sparsity=0.3), StageContext(family_splits, 64))
    # assert: Q/K/V (or fused QKV), output, FFN in/out of every layer, nothing else
    found = {id(m) for _, m in encoder_linears(res.model)}
    expected = {id(attr(layer, p)) for layer in fam.layer_list(res.model)
                for p in fam.layer.qkv + (fam.layer.attn_out, fam.layer.ffn_in, fam.layer.ffn_out)}
    assert found == expected
    assert sparsity(res.model) == pytest.approx(0.3, abs=1e-3)
    torch.testing.assert_close(res.model.get_input_embeddings().weight, emb, atol=0, rtol=0)
    _assert_runs_and_reloads(res, tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
def test_prune_structured_cuts_heads_where_the_config_can_say_so_and_ffn_everywhere(zoo, family, family_splits,
                                                                                   tmp_path):
    # setup: 2 of 8 heads where the family's config rebuilds per-layer head counts; 18 of 37 neurons per layer
    model, tok = zoo.load(family)
    fam = family_of(model)
    params = count_params(model)
    heads = 0.25 if fam.prune_heads else 0.0
    cfg = StructuredPruneCfg(heads_fraction=heads, ffn_fraction=0.5, importance="taylor", calibration_batches=2)
    # execute
    res = prune_structured(model, tok, cfg, StageContext(family_splits, 64))
    # assert
    assert sum(heads_per_layer(res.model)) == (6 if fam.prune_heads else 8)
    assert fam.dims(res.model.config)["intermediate_size"] == 19
    assert attr(fam.layer_list(res.model)[0], fam.layer.ffn_in).out_features == 19 * (2 if fam.layer.ffn_glu else 1)
    assert count_params(res.model) < params
    _assert_runs_and_reloads(res, tmp_path)


@pytest.mark.parametrize("family", [f for f in FAMILIES if not family_for(f).prune_heads])
def test_prune_structured_refuses_heads_in_one_line_before_any_work(zoo, family, family_splits):
    # setup
    model, tok = zoo.load(family)
    # execute / assert
    with pytest.raises(UserInputError, match="heads_fraction: 0"):
        prune_structured(model, tok, StructuredPruneCfg(heads_fraction=0.25), StageContext(family_splits, 64))


@pytest.mark.parametrize("family", FAMILIES)
def test_trim_vocab_gives_the_remapped_ids_of_the_test_split(zoo, family, family_splits, tmp_path):
    # setup
    from transformers import AutoTokenizer
    model, tok = zoo.load(family)
    original, _ = zoo.load(family)
    texts = family_splits["test"].texts
    # execute
    res = trim_vocab(model, tok, VocabTrimCfg(corpus_splits=["test"]), StageContext(family_splits, 64))
    new = res.tokenizer
    # assert: smaller table; every test text -> exactly the old tokens under their new ids, specials included
    n = res.metrics["vocab_size"]
    assert n < len(tok) and len(new) == n == res.model.config.vocab_size
    assert res.model.get_input_embeddings().num_embeddings == n
    old_to_new = {tok.convert_tokens_to_ids(t): i for i, t in enumerate(new.convert_ids_to_tokens(list(range(n))))}
    for t in texts:
        assert new(t)["input_ids"] == [old_to_new[i] for i in tok(t)["input_ids"]], t
    for name in ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"):
        special = getattr(tok, name)
        assert getattr(new, name) == special
        assert new.convert_tokens_to_ids(special) == old_to_new[tok.convert_tokens_to_ids(special)]
    torch.testing.assert_close(_logits(res.model, new, texts[:16]), _logits(original, tok, texts[:16]), atol=1e-5,
                               rtol=0)
    unseen = new("鑫 zebra-quokka xylophone")["input_ids"]
    assert max(unseen) < n
    new.save_pretrained(str(tmp_path / "tok"))
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path / "tok"), local_files_only=True)
    assert [reloaded(t)["input_ids"] for t in texts[:16]] == [new(t)["input_ids"] for t in texts[:16]]
    _assert_runs_and_reloads(res, tmp_path / "model")
