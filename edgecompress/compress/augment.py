"""Training-text augmentation for distillation on small data (TinyBERT, Jiao et al. 2020; Tang et al. 2019).

A student distilled on 3,000 rows sees the teacher's function at 3,000 points; variants of those rows (words
masked, or swapped for another word of the same corpus) are more points near the real inputs, and the teacher
labels them for free. The variants carry no label of their own (IGNORE_LABEL): the KD term learns from them, the
CE term only from the user's rows. No model is needed to make them (TinyBERT's replacements come from an MLM and
GloVe; the packaged sentence encoder has no MLM head), so this works for any family and any tokenizer.
"""
from __future__ import annotations

import numpy as np

from edgecompress.data import Split
from edgecompress.stage_configs import AugmentCfg

IGNORE_LABEL = -100  # a variant's label: the CE term skips it (kd_loss), the teacher's logits stand in


def variant(words: list[str], rng: np.random.Generator, cfg: AugmentCfg, pool: list[str],
            mask_token: str | None) -> str:
    """One variant of a whitespace-split text: each word masked or replaced with the configured chances, and at
    least one word changed (a copy of the original teaches nothing new). Without a mask token a masked word is
    dropped instead."""
    if not words:
        return ""
    out = list(words)
    draws = rng.random(len(words))
    changed = False
    for i, d in enumerate(draws):
        if d < cfg.mask_prob:
            out[i], changed = mask_token, True
        elif d < cfg.mask_prob + cfg.replace_prob:
            out[i], changed = pool[rng.integers(len(pool))], True
    if not changed:
        i = int(rng.integers(len(words)))
        use_mask = rng.random() * (cfg.mask_prob + cfg.replace_prob) < cfg.mask_prob
        out[i] = mask_token if use_mask else pool[rng.integers(len(pool))]
    return " ".join(w for w in out if w is not None)


def augmented(split: Split, cfg: AugmentCfg, mask_token: str | None, seed: int = 0) -> tuple[Split, dict]:
    """`split` followed by variants of its rows (in a seeded round-robin over a shuffled order) up to cfg.rows rows;
    `split` itself when it has that many already. Returns the split and what was done, for the stage's metrics."""
    n = len(split)
    if n >= cfg.rows or n == 0:
        return split, {"rows": n, "variants": 0}
    rng = np.random.default_rng(seed)
    tokens = [t.split() for t in split.texts]
    pool = [w for ws in tokens for w in ws]  # frequency-weighted: common words are drawn as often as they occur
    if not pool:
        return split, {"rows": n, "variants": 0}
    k = cfg.rows - n
    order = np.concatenate([rng.permutation(n) for _ in range(-(-k // n))])[:k]
    texts = [variant(tokens[i], rng, cfg, pool, mask_token) for i in order]
    labels = np.concatenate([split.labels, np.full(k, IGNORE_LABEL, dtype=split.labels.dtype)])
    domains = split.domains + [split.domains[i] for i in order] if split.domains else None
    out = Split(split.name, split.texts + texts, labels, domains, split.label_names)
    return out, {"rows": len(out), "variants": k, "source_rows": n, "mask_prob": cfg.mask_prob,
                 "replace_prob": cfg.replace_prob, "mask_token": mask_token}
