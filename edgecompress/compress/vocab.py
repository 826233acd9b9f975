"""Vocabulary trimming: keep the special tokens and the tokens seen in the corpus, slice the embedding table to
them and ship a tokenizer that maps text to the new ids (TextPruner's vocabulary pruning).

The embedding table is 11.7M of MiniLM-L6's 22.7M parameters; a domain corpus uses a few thousand of the
30,522 WordPiece tokens, so this is the biggest single size win (and costs no latency: it is a lookup).

The new tokenizer is the old fast tokenizer with its WordPiece vocabulary replaced by the kept tokens in
new-id order (normalizer, pre-tokenizer, post-processor and special tokens copied, their ids remapped).
Segmentation: WordPiece is greedy longest-match-first, so a word whose pieces are all kept segments exactly as
before (any longer prefix it could match was not in the old vocabulary either) -> same tokens, new ids. Every
word of the corpus is such a word. A word that needed a dropped piece is segmented into the kept pieces where
possible, else it becomes [UNK] (as WordPiece does for any word it cannot cover).
"""
from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Optional

from edgecompress.compress.base import StageContext, StageResult, Teacher, register_stage
from edgecompress.data import EVAL_BATCH
from edgecompress.errors import UserInputError
from edgecompress.recipe import VocabTrimCfg


def token_counts(tokenizer, texts: list[str]) -> Counter:
    # No truncation: a token past max_seq_len is still a token of the corpus the user may send.
    enc = tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
    return Counter(i for ids in enc for i in ids)


def kept_ids(tokenizer, counts: Counter, min_count: int) -> list[int]:
    """Old ids to keep, ascending (so [PAD]=0 stays 0 in BERT vocabularies): specials + added + frequent."""
    keep = set(tokenizer.all_special_ids) | {i for i, c in counts.items() if c >= min_count}
    keep |= set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    return sorted(keep)


def _remap_post_processor(pp: dict | None, old_to_new: dict[int, int]) -> dict | None:
    if pp is None:
        return None
    t = pp.get("type")
    if t == "Sequence":
        pp["processors"] = [_remap_post_processor(p, old_to_new) for p in pp["processors"]]
    elif t == "TemplateProcessing":
        for tok in pp.get("special_tokens", {}).values():
            tok["ids"] = [old_to_new[i] for i in tok["ids"]]
    elif t in ("BertProcessing", "RobertaProcessing"):
        for k in ("sep", "cls"):
            pp[k] = [pp[k][0], old_to_new[pp[k][1]]]
    elif t not in ("ByteLevel",):
        raise UserInputError(f"trim_vocab: tokenizer post-processor {t!r} is not supported; use a BERT WordPiece tokenizer")
    return pp


def trimmed_tokenizer(tokenizer, keep: list[int]):
    """The same fast tokenizer over only the kept tokens, new id = position in `keep`."""
    from transformers import AutoTokenizer

    if not getattr(tokenizer, "is_fast", False):
        raise UserInputError("trim_vocab needs a fast tokenizer (tokenizer.json); re-save the teacher's tokenizer with "
                             "transformers' AutoTokenizer so it writes tokenizer.json")
    old_to_new = {old: new for new, old in enumerate(keep)}
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"].get("type") != "WordPiece":
        raise UserInputError(f"trim_vocab supports WordPiece tokenizers (BERT family); this one is {spec['model'].get('type')}")
    id_to_tok = {i: t for t, i in spec["model"]["vocab"].items()}
    spec["model"]["vocab"] = {id_to_tok[old]: new for new, old in enumerate(keep)}
    for t in spec.get("added_tokens") or []:
        t["id"] = old_to_new[t["id"]]
    spec["post_processor"] = _remap_post_processor(spec.get("post_processor"), old_to_new)
    if spec.get("padding"):
        spec["padding"]["pad_id"] = old_to_new[spec["padding"]["pad_id"]]
    with tempfile.TemporaryDirectory(prefix="edgecompress.vocab.") as tmp:
        tokenizer.save_pretrained(tmp)
        # tokenizer_config.json keys its added tokens by id: remap them too, or loading re-adds them at old ids.
        tc_path = Path(tmp) / "tokenizer_config.json"
        tc = json.loads(tc_path.read_text())
        if "added_tokens_decoder" in tc:
            tc["added_tokens_decoder"] = {str(old_to_new[int(k)]): v for k, v in tc["added_tokens_decoder"].items()}
        tc_path.write_text(json.dumps(tc))
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(spec))
        (Path(tmp) / "vocab.txt").write_text("".join(id_to_tok[old] + "\n" for old in keep), encoding="utf-8")
        new = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
    if len(new) != len(keep) or new.convert_ids_to_tokens(new.unk_token_id) != tokenizer.unk_token:
        raise RuntimeError(f"trimmed tokenizer has {len(new)} tokens, expected {len(keep)}")
    return new


def trim_embeddings(model, keep: list[int], pad_token_id: int | None) -> None:
    import torch
    old = model.get_input_embeddings()
    idx = torch.tensor(keep, dtype=torch.long)
    new = torch.nn.Embedding(len(keep), old.embedding_dim, padding_idx=pad_token_id, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight.detach().index_select(0, idx))
    model.set_input_embeddings(new)
    model.config.vocab_size = len(keep)
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id


@register_stage("trim_vocab")
def trim_vocab(model, tokenizer, cfg: VocabTrimCfg, ctx: StageContext, teacher: Optional[Teacher] = None) -> StageResult:
    """Returns the trimmed model with the new tokenizer: every later stage and export must read the new ids."""
    from edgecompress.compress.train import accuracy
    from edgecompress.modeling import count_params

    vocab_before, params_before = model.get_input_embeddings().num_embeddings, count_params(model)
    if len(tokenizer) > vocab_before:
        raise UserInputError(f"trim_vocab: the tokenizer has {len(tokenizer)} tokens but the embedding only {vocab_before}")
    texts = [t for s in cfg.corpus_splits for t in ctx.splits[s].texts]
    counts = token_counts(tokenizer, texts)
    keep = kept_ids(tokenizer, counts, cfg.min_count)
    new_tok = trimmed_tokenizer(tokenizer, keep)
    trim_embeddings(model, keep, new_tok.pad_token_id)
    model.eval()
    metrics = {}
    if cfg.recovery is not None:
        from edgecompress.compress.kd import recover
        metrics["val_accuracy_before_recovery"] = accuracy(model, ctx.batches(new_tok, "validation", EVAL_BATCH,
                                                                              shuffle=False))
        metrics["recovery"] = recover(model, new_tok, cfg.recovery, ctx, teacher, "vocab recovery")
        model.eval()
    metrics.update({
        "vocab_size_before": vocab_before, "vocab_size": len(keep), "corpus_splits": list(cfg.corpus_splits),
        "corpus_texts": len(texts), "min_count": cfg.min_count, "corpus_tokens": int(sum(counts.values())),
        "params_before": params_before, "params": count_params(model),
        "val_accuracy": accuracy(model, ctx.batches(new_tok, "validation", EVAL_BATCH, shuffle=False)),
        "test_accuracy": accuracy(model, ctx.batches(new_tok, "test", EVAL_BATCH, shuffle=False))})
    return StageResult(model, new_tok, metrics)
