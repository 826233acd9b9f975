"""The trim_vocab stage: keep the special tokens and the tokens seen in the corpus, slice the embedding table to
them and ship a tokenizer that maps text to the new ids (TextPruner's vocabulary pruning); how a trim keeps every
corpus text's segmentation is in compress/vocabulary.py.

The embedding table is 11.7M of MiniLM-L6's 22.7M parameters; a domain corpus uses a few thousand of the
30,522 WordPiece tokens, so this is the biggest single size win (and costs no latency: it is a lookup).
"""
from __future__ import annotations

from typing import Optional

from edgecompress.compress.base import StageContext, StageResult, Teacher, register_stage
from edgecompress.compress.vocabulary import trim_to_corpus
from edgecompress.recipe import VocabTrimCfg


@register_stage("trim_vocab")
def trim_vocab(model, tokenizer, cfg: VocabTrimCfg, ctx: StageContext, teacher: Optional[Teacher] = None) -> StageResult:
    """Returns the trimmed model with the new tokenizer: every later stage and export must read the new ids."""
    from edgecompress.compress.kd import split_metrics
    from edgecompress.modeling import count_params

    params_before = count_params(model)
    texts = [t for s in cfg.corpus_splits for t in ctx.splits[s].texts]
    new_tok, trimmed = trim_to_corpus(model, tokenizer, texts, cfg.min_count)
    model.eval()
    metrics = {}
    if cfg.recovery is not None:
        from edgecompress.compress.kd import recover
        metrics.update({f"{k}_before_recovery": v for k, v in
                        split_metrics(model, new_tok, ctx, teacher, "validation").items()})
        metrics["recovery"] = recover(model, new_tok, cfg.recovery, ctx, teacher, "vocab recovery")
        model.eval()
    metrics.update({
        **trimmed, "corpus_splits": list(cfg.corpus_splits), "params_before": params_before,
        "params": count_params(model),
        **split_metrics(model, new_tok, ctx, teacher, "validation"),
        **split_metrics(model, new_tok, ctx, teacher, "test")})
    return StageResult(model, new_tok, metrics)
