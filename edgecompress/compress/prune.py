"""Unstructured magnitude (L1) pruning of the encoder's Linear weights, made permanent.

Zeros do not make a dense matmul faster or a file smaller by themselves; this is the spine's honest
simplest version. Embeddings and the classifier head are left dense: the head is tiny and the embedding
table is a lookup, not a matmul.
"""
from __future__ import annotations

import torch
from torch.nn.utils import prune as tprune

from edgecompress.compress.base import StageContext
from edgecompress.compress.train import accuracy
from edgecompress.recipe import PruneCfg
from edgecompress.registry import STAGES

EVAL_BATCH = 64


def encoder_linears(model) -> list[tuple[str, torch.nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".encoder." in f".{n}"]


def sparsity(model) -> float:
    ws = [m.weight for _, m in encoder_linears(model)]
    return float(sum((w == 0).sum().item() for w in ws) / sum(w.numel() for w in ws))


@STAGES.register("prune")
def prune(model, cfg: PruneCfg, ctx: StageContext):
    targets = [(m, "weight") for _, m in encoder_linears(model)]
    if cfg.sparsity > 0:
        if cfg.scope == "global":
            tprune.global_unstructured(targets, pruning_method=tprune.L1Unstructured, amount=cfg.sparsity)
        else:
            for m, name in targets:
                tprune.l1_unstructured(m, name, amount=cfg.sparsity)
        for m, name in targets:
            tprune.remove(m, name)  # bake the mask into the weight: no hooks, no weight_orig in the state dict
    ctx.metrics.update({"sparsity": round(sparsity(model), 6), "target_sparsity": cfg.sparsity,
                        "val_accuracy": accuracy(model, ctx.batches("validation", EVAL_BATCH, shuffle=False)),
                        "test_accuracy": accuracy(model, ctx.batches("test", EVAL_BATCH, shuffle=False))})
    return model
