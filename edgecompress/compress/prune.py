"""Unstructured pruning of the encoder's Linear weights: magnitude, threshold or first-order Taylor importance,
one-shot or gradual, optionally followed by recovery fine-tuning under distillation from the teacher.

Zeros do not make a dense matmul faster or a file smaller by themselves (only a compressed file shrinks);
structured.py removes whole heads and neurons for that. Embeddings and the classifier head are left dense:
the head is tiny and the embedding table is a lookup, not a matmul (vocab.py shrinks it).

Exactness: the k = round(sparsity * n) lowest-scoring weights are zeroed by rank (ties broken by position),
not by comparing to a cut-off value, so the requested sparsity is reached exactly even with tied scores.
Already-zero weights score 0, so a gradual schedule only ever adds zeros.
"""
from __future__ import annotations

from typing import Optional

import torch

from edgecompress.compress.base import StageContext, StageResult, Teacher, register_stage
from edgecompress.compress.importance import weight_scores
from edgecompress.compress.kd import recover, split_metrics
from edgecompress.families import family_of
from edgecompress.recipe import PruneCfg


def encoder_linears(model) -> list[tuple[str, torch.nn.Linear]]:
    """Every Linear inside the transformer layers (attention and FFN), wherever the family keeps them."""
    prefix = family_of(model).layer_prefix(model)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(prefix)]


def sparsity(model) -> float:
    ws = [m.weight for _, m in encoder_linears(model)]
    return float(sum((w == 0).sum().item() for w in ws) / sum(w.numel() for w in ws))


def _lowest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean keep-mask with exactly k False entries: the k lowest scores (stable order breaks ties)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    if k > 0:
        order = torch.sort(scores.flatten(), stable=True).indices
        keep[order[:k]] = False
    return keep.view_as(scores)


def masks_for(scores: list[torch.Tensor], target: float, scope: str) -> list[torch.Tensor]:
    if scope == "per_layer":
        return [_lowest_k_mask(s, round(target * s.numel())) for s in scores]
    flat = torch.cat([s.flatten() for s in scores])
    keep = _lowest_k_mask(flat, round(target * flat.numel()))
    return [m.view_as(s) for m, s in zip(torch.split(keep, [s.numel() for s in scores]), scores)]


def cubic_schedule(final: float, steps: int) -> list[float]:
    """Zhu & Gupta (2017): s_t = s_f * (1 - (1 - t/N)^3), t = 1..N; prunes fast early, gently at the end.
    The last value is exactly s_f."""
    return [final * (1 - (1 - t / steps) ** 3) for t in range(1, steps + 1)]


# -- the stage --------------------------------------------------------------------------------------------

def _prune_step(model, tokenizer, cfg: PruneCfg, ctx: StageContext, target: float, threshold: Optional[float]):
    layers = encoder_linears(model)
    params = [m.weight for _, m in layers]
    if cfg.method == "threshold":
        masks = [p.detach().abs() >= threshold for p in params]
    else:
        scores = weight_scores(cfg.method, model, params, tokenizer, ctx, cfg.calibration_batches)
        masks = masks_for(scores, target, cfg.scope)
    with torch.no_grad():
        for p, keep in zip(params, masks):
            p.mul_(keep.to(p.dtype))
    return list(zip(params, [k.to(params[0].dtype) for k in masks]))


@register_stage("prune")
def prune(model, tokenizer, cfg: PruneCfg, ctx: StageContext, teacher: Optional[Teacher] = None) -> StageResult:
    steps = cfg.steps if cfg.schedule == "gradual" else 1
    ramp = cubic_schedule(1.0, steps)  # fraction of the final sparsity (or threshold) at each step
    history = []
    step_recovery = None
    if cfg.recovery is not None:
        # Gradual: the recovery budget is spread over the steps, so each prune is followed by some recovery.
        step_recovery = cfg.recovery.model_copy(update={"epochs": cfg.recovery.epochs / steps})
    for t, r in enumerate(ramp, 1):
        target = cfg.sparsity * r
        thr = cfg.threshold * r if cfg.threshold is not None else None
        masks = _prune_step(model, tokenizer, cfg, ctx, target, thr)
        entry = {"step": t, "sparsity": round(sparsity(model), 6)}
        if cfg.method != "threshold":
            entry["target_sparsity"] = round(target, 6)
        else:
            entry["threshold"] = thr
        if step_recovery is not None:
            entry["recovery"] = recover(model, tokenizer, step_recovery, ctx, teacher, f"prune recovery {t}/{steps}",
                                        masks)
        history.append(entry)
    model.eval()
    metrics = {"method": cfg.method, "scope": cfg.scope, "schedule": cfg.schedule,
               "sparsity": round(sparsity(model), 6),
               "target_sparsity": cfg.sparsity if cfg.method != "threshold" else None,
               "threshold": cfg.threshold, "steps": history,
               **split_metrics(model, tokenizer, ctx, teacher, "validation"),
               **split_metrics(model, tokenizer, ctx, teacher, "test")}
    return StageResult(model, tokenizer, metrics)
