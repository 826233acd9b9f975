"""Trimming a vocabulary to a corpus: the tokens to keep, a tokenizer over only them and the embedding table
sliced to match. Shared by the trim_vocab stage (which trims a trained model) and distillation (whose student
can read a trimmed vocabulary from its first step, so no separate recovery is needed).

The new tokenizer is the old fast tokenizer with its model's vocabulary replaced by the kept tokens in new-id
order (normalizer, pre-tokenizer, post-processor and special tokens copied, their ids remapped). Every corpus
text segments exactly as before (same tokens, new ids), for each tokenizer model the families ship:
- WordPiece (BERT, DistilBERT, ELECTRA) is greedy longest-match-first, so a word whose pieces are all kept
  segments as before (any longer prefix it could match was not in the old vocabulary either). A word that needed a
  dropped piece is segmented into kept pieces where possible, else it becomes [UNK].
- BPE (RoBERTa, ModernBERT: byte-level) applies its merges lowest rank first. The kept set is closed under the
  merges that build each kept token, and a merge stays (in its old order) when its parts and result are kept, so
  every merge the old tokenizer applied to a corpus word still applies, and no merge it did not apply can fire
  (the merges are a subset). The single-character alphabet (256 byte symbols) is always kept, so unseen text
  still tokenizes, into shorter pieces, never into nothing.
- Unigram (XLM-R, DeBERTa-v3's SentencePiece) takes the best-scoring segmentation: the corpus segmentation uses
  only kept pieces, so it is still the best of the smaller set. The lowest-scoring piece is kept as well, because
  the unknown-piece penalty is computed from the minimum score; byte-fallback pieces are kept when enabled.
"""
from __future__ import annotations

import json
import re
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional

from edgecompress.errors import UserInputError


def token_counts(tokenizer, texts: list[str]) -> Counter:
    # No truncation: a token past max_seq_len is still a token of the corpus the user may send.
    enc = tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
    return Counter(i for ids in enc for i in ids)


def ranked_ids(counts: Counter, min_count: int, max_tokens: Optional[int] = None) -> list[int]:
    """The corpus tokens seen at least min_count times, most frequent first, at most max_tokens of them."""
    return [i for i, c in counts.most_common() if c >= min_count][:max_tokens]


def kept_ids(tokenizer, counts: Counter, min_count: int, max_tokens: Optional[int] = None) -> list[int]:
    """Old ids to keep, ascending (so [PAD]=0 stays 0 in BERT vocabularies): specials + added + ranked_ids."""
    keep = set(tokenizer.all_special_ids) | set(ranked_ids(counts, min_count, max_tokens))
    keep |= set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    return sorted(keep)


def _merge_pair(m) -> tuple[str, str]:
    # tokenizers < 0.20 wrote a merge as "a b", newer versions as ["a", "b"].
    return tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1])


def _merge_result(a: str, b: str, prefix: str) -> str:
    return a + (b[len(prefix):] if prefix and b.startswith(prefix) else b)


def completed_ids(tokenizer, keep: list[int]) -> list[int]:
    """`keep` plus the ids the tokenizer model needs to segment the kept text exactly as before (module docstring):
    BPE: every part of the merges that build a kept token, and the single-character alphabet; Unigram: the
    lowest-scoring piece (the unknown penalty is relative to it) and byte-fallback pieces. WordPiece: nothing."""
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    out = set(keep)
    if model.get("type") == "BPE":
        vocab, pre = model["vocab"], model.get("continuing_subword_prefix") or ""
        suf = model.get("end_of_word_suffix") or ""
        core = lambda t: t[len(pre):] if pre and t.startswith(pre) else t  # noqa: E731
        out |= {i for t, i in vocab.items() if len(core(t).removesuffix(suf) if suf else core(t)) == 1}
        made_by = defaultdict(list)
        for m in model["merges"]:
            a, b = _merge_pair(m)
            made_by[_merge_result(a, b, pre)].append((a, b))
        id_to_tok = {i: t for t, i in vocab.items()}
        todo = [id_to_tok[i] for i in out if i in id_to_tok]
        while todo:
            for a, b in made_by.get(todo.pop(), ()):
                for part in (a, b):
                    if vocab[part] not in out:
                        out.add(vocab[part])
                        todo.append(part)
    elif model.get("type") == "Unigram":
        scores = [s for _, s in model["vocab"]]
        out.add(min(range(len(scores)), key=scores.__getitem__))
        if model.get("byte_fallback"):
            out |= {i for i, (p, _) in enumerate(model["vocab"]) if re.fullmatch(r"<0x[0-9A-F]{2}>", p)}
    return sorted(out)


def _trimmed_model(model: dict, keep: list[int], old_to_new: dict[int, int]) -> dict:
    """The tokenizer.json "model" over only the kept ids (new id = position in keep). A kept id the model does not
    know is an added token (DeBERTa-v3's [MASK] sits past the SentencePiece vocabulary): added_tokens carries it."""
    kind = model.get("type")
    if kind in ("WordPiece", "BPE"):
        id_to_tok = {i: t for t, i in model["vocab"].items()}
        if kind == "BPE":
            kept = {id_to_tok[old] for old in keep if old in id_to_tok}
            pre = model.get("continuing_subword_prefix") or ""
            model["merges"] = [m for m in model["merges"]
                               if {*_merge_pair(m), _merge_result(*_merge_pair(m), pre)} <= kept]
        model["vocab"] = {id_to_tok[old]: old_to_new[old] for old in keep if old in id_to_tok}
    elif kind == "Unigram":
        # Unigram ids are list positions: the kept pieces must come before any added-only token.
        pieces = [old for old in keep if old < len(model["vocab"])]
        if pieces != keep[:len(pieces)]:
            raise UserInputError("trim_vocab: this Unigram tokenizer has added tokens inside its piece range; "
                                 "drop trim_vocab from the stages")
        model["vocab"] = [model["vocab"][old] for old in pieces]
        if model.get("unk_id") is not None:
            model["unk_id"] = old_to_new[model["unk_id"]]
    else:
        raise UserInputError(f"trim_vocab supports WordPiece, BPE and Unigram tokenizers; this one is {kind}")
    return model


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
        raise UserInputError(f"trim_vocab: tokenizer post-processor {t!r} is not supported; drop trim_vocab from the "
                             f"stages or re-save the tokenizer with a Template/Bert/Roberta post-processor")
    return pp


def trimmed_tokenizer(tokenizer, keep: list[int]):
    """The same fast tokenizer over only the kept tokens, new id = position in `keep`."""
    from transformers import AutoTokenizer

    if not getattr(tokenizer, "is_fast", False):
        raise UserInputError("trim_vocab needs a fast tokenizer (tokenizer.json); re-save the teacher's tokenizer with "
                             "transformers' AutoTokenizer so it writes tokenizer.json")
    old_to_new = {old: new for new, old in enumerate(keep)}
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    kind = spec["model"].get("type")
    id_to_tok = {t["id"]: t["content"] for t in spec.get("added_tokens") or []}
    if kind == "WordPiece":
        id_to_tok.update({i: t for t, i in spec["model"]["vocab"].items()})
    spec["model"] = _trimmed_model(spec["model"], keep, old_to_new)
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
        # The slow tokenizer's files hold the old vocabulary: removed, so the new tokenizer cannot load or re-save
        # them (its save_pretrained writes vocab.json/merges.txt from the trimmed model).
        for stale in SLOW_VOCAB_FILES:
            (Path(tmp) / stale).unlink(missing_ok=True)
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(spec))
        if kind == "WordPiece":
            (Path(tmp) / "vocab.txt").write_text("".join(id_to_tok[old] + "\n" for old in keep), encoding="utf-8")
        new = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
    if len(new) != len(keep) or new.convert_ids_to_tokens(new.unk_token_id) != tokenizer.unk_token:
        raise RuntimeError(f"trimmed tokenizer has {len(new)} tokens, expected {len(keep)}")
    return new


SLOW_VOCAB_FILES = ("vocab.txt", "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spm.model",
                    "tokenizer.model")


def trim_embeddings(model, keep: list[int], pad_token_id: int | None) -> None:
    import torch
    from edgecompress.families import family_of
    old_pad = model.config.pad_token_id
    if family_of(model).positions_from_pad and pad_token_id != old_pad:
        raise UserInputError(f"trim_vocab: {model.config.model_type} numbers positions from pad_token_id + 1, and the "
                             f"trimmed vocabulary would move the pad id {old_pad} to {pad_token_id}; keep the tokens "
                             f"below the pad id special (or drop trim_vocab)")
    old = model.get_input_embeddings()
    idx = torch.tensor(keep, dtype=torch.long)
    new = torch.nn.Embedding(len(keep), old.embedding_dim, padding_idx=pad_token_id, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight.detach().index_select(0, idx))
    model.set_input_embeddings(new)
    model.config.vocab_size = len(keep)
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id


def trim_to_corpus(model, tokenizer, texts: list[str], min_count: int = 1, max_tokens: Optional[int] = None,
                   counts: Optional[Counter] = None):
    """Trim `model`'s word embeddings in place to the tokens `texts` use at least `min_count` times, at most
    `max_tokens` of them (plus what the tokenizer needs to segment them as before); returns the tokenizer over the
    new ids and what was done. counts: token_counts(tokenizer, texts) when the caller has it already."""
    vocab_before = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab_before:
        raise UserInputError(f"vocabulary trimming: the tokenizer has {len(tokenizer)} tokens but the embedding only "
                             f"{vocab_before}")
    counts = token_counts(tokenizer, texts) if counts is None else counts
    keep = completed_ids(tokenizer, kept_ids(tokenizer, counts, min_count, max_tokens))
    new_tok = trimmed_tokenizer(tokenizer, keep)
    trim_embeddings(model, keep, new_tok.pad_token_id)
    return new_tok, {"vocab_size_before": vocab_before, "vocab_size": len(keep), "corpus_texts": len(texts),
                     "min_count": min_count, "max_tokens": max_tokens, "corpus_tokens": int(sum(counts.values()))}


def tokens_for_coverage(tokenizer, counts: Counter, heldout: list[str], max_unseen: float, min_count: int = 1,
                        max_tokens: Optional[int] = None) -> tuple[Optional[int], float]:
    """The fewest of the corpus's most frequent tokens (seen >= min_count, at most max_tokens) that leave at most
    `max_unseen` of the held-out texts' tokens outside the table, and the share they leave; (None, share of the
    largest allowed table) when even that leaves more."""
    held = token_counts(tokenizer, heldout)
    total = sum(held.values()) or 1
    covered = sum(held[i] for i in set(tokenizer.all_special_ids))
    for n, i in enumerate(ranked_ids(counts, min_count, max_tokens), start=1):
        covered += held.get(i, 0)
        if 1 - covered / total <= max_unseen:
            return n, 1 - covered / total
    return None, 1 - covered / total
