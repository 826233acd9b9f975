"""The stage contract: a stage returns what it makes (StageResult) and leaves the shared context alone; the
registry says which stages start from the teacher."""
import dataclasses

import pytest

from edgecompress.compress.base import Stage, StageContext, StageResult
from edgecompress.recipe import PruneCfg, VocabTrimCfg
from edgecompress.registry import STAGES


def _snapshot(ctx: StageContext) -> dict:
    return {"fields": dict(vars(ctx)), "splits": dict(ctx.splits),
            "rows": {k: (list(v.texts), v.labels.copy()) for k, v in ctx.splits.items()}}


@pytest.mark.parametrize("name, cfg", [("trim_vocab", VocabTrimCfg()), ("prune", PruneCfg(sparsity=0.3))])
def test_a_stage_returns_a_result_and_does_not_mutate_its_context(tiny_vocab_bert, minilm_tokenizer, small_splits,
                                                                   name, cfg):
    # setup
    ctx = StageContext(dict(small_splits), 64, seed=0)
    before = _snapshot(ctx)
    vocab_before = len(minilm_tokenizer)
    # execute
    res = STAGES.get(name)(tiny_vocab_bert, minilm_tokenizer, cfg, ctx)
    # assert: everything the stage made is in the result ...
    assert isinstance(res, StageResult)
    assert res.model is not None and res.metrics["test_accuracy"] >= 0.0
    if name == "trim_vocab":
        assert len(res.tokenizer) < vocab_before == len(minilm_tokenizer)  # a new tokenizer; the input one is intact
    else:
        assert res.tokenizer is minilm_tokenizer
    # ... and the context is exactly what it was: same fields, same split objects, same rows
    after = _snapshot(ctx)
    assert after["fields"].keys() == before["fields"].keys()
    assert all(after["fields"][k] is v for k, v in before["fields"].items())
    assert after["splits"].keys() == before["splits"].keys()
    assert all(after["splits"][k] is v for k, v in before["splits"].items())
    for k, (texts, labels) in before["rows"].items():
        assert after["rows"][k][0] == texts and (after["rows"][k][1] == labels).all()


def test_the_context_cannot_be_assigned_to(small_splits):
    # setup
    ctx = StageContext(small_splits, 64)
    # execute / assert
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.tokenizer = object()


def test_distill_declares_that_it_starts_from_the_teacher_and_the_others_do_not():
    # execute
    stages = {n: STAGES.get(n) for n in ("distill", "prune", "prune_structured", "trim_vocab")}
    # assert
    assert all(isinstance(s, Stage) for s in stages.values())
    assert stages["distill"].starts_from_teacher is True
    assert not any(s.starts_from_teacher for n, s in stages.items() if n != "distill")


def test_teacher_fine_tuning_is_not_a_recipe_stage():
    # execute: importing the module that holds the teacher's fine-tune registers nothing
    import edgecompress.compress.finetune  # noqa: F401
    # assert: the pipeline fine-tunes the teacher itself; a recipe cannot name it as a stage
    assert "finetune" not in STAGES.names()
