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

import numpy as np
import torch

from edgecompress import progress
from edgecompress.compress.base import StageContext
from edgecompress.compress.train import accuracy, predict_logits, train
from edgecompress.recipe import PruneCfg, TrainCfg
from edgecompress.registry import STAGES

EVAL_BATCH = 64
# Recovery distillation weights: the distill stage's defaults (CE on labels + KD from the teacher's logits).
RECOVERY_ALPHA = 0.5
RECOVERY_TEMPERATURE = 2.0


def encoder_linears(model) -> list[tuple[str, torch.nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".encoder." in f".{n}"]


def sparsity(model) -> float:
    ws = [m.weight for _, m in encoder_linears(model)]
    return float(sum((w == 0).sum().item() for w in ws) / sum(w.numel() for w in ws))


# -- importance -------------------------------------------------------------------------------------------

def taylor_scores(model, params: list[torch.nn.Parameter], ctx: StageContext, n_batches: int,
                  batch_size: int = 16) -> list[torch.Tensor]:
    """First-order Taylor importance |w * dL/dw| (CE on labels), accumulated over calibration batches of the
    train split: the estimated loss change when a weight is set to zero (Molchanov et al. 2017)."""
    scores = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    cal = ctx.batches("train", batch_size, shuffle=True, subset=n_batches * batch_size)[:n_batches]
    was_training = model.training
    model.eval()  # no dropout: the scores rank weights of the model as it will run
    for inputs, labels, _ in progress.track(cal, description="importance (taylor)"):
        model.zero_grad(set_to_none=True)
        out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}, labels=torch.from_numpy(labels))
        out.loss.backward()
        with torch.no_grad():
            for s, p in zip(scores, params):
                if p.grad is not None:
                    s += (p.detach() * p.grad).abs()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return scores


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


# -- recovery ---------------------------------------------------------------------------------------------

def recover(model, cfg: TrainCfg, ctx: StageContext, description: str,
            masks: Optional[list[tuple[torch.nn.Parameter, torch.Tensor]]] = None) -> dict:
    """Fine-tune the pruned model under distillation from ctx.teacher (logit KD + CE, the distill stage's loss),
    through the shared training loop. `masks` (param, keep) are held: gradient hooks zero the gradients of
    pruned weights, and with zero gradients AdamW's moments and decoupled weight decay leave them at zero.

    The teacher is fed with ctx.teacher_tokenizer (after vocabulary trimming the student's ids differ); both
    batch lists come from the same subset of the train split, so the row index each batch carries links them.
    Without a teacher (a recipe with no teacher in ctx) this is plain fine-tuning on the labels."""
    from edgecompress.compress.distill import kd_loss
    from edgecompress.data import batches as make_batches

    subset = cfg.max_train_samples
    teacher_logits = None
    if ctx.teacher is not None:
        ttok = ctx.teacher_tokenizer or ctx.tokenizer
        rows = ctx.splits["train"].subset(subset, ctx.seed)
        teacher_logits = torch.from_numpy(predict_logits(
            ctx.teacher, make_batches(ttok, rows, EVAL_BATCH, ctx.max_seq_len, shuffle=False)))

    def loss_fn(m, inputs, labels, idx):
        logits = m(**inputs).logits
        if teacher_logits is None:
            loss = torch.nn.functional.cross_entropy(logits, labels)
            return loss, {"ce": float(loss.detach())}
        return kd_loss(logits, teacher_logits[torch.from_numpy(np.asarray(idx))], labels,
                       RECOVERY_ALPHA, RECOVERY_TEMPERATURE)

    hooks = [p.register_hook(lambda g, keep=keep: g * keep) for p, keep in (masks or [])]
    try:
        res = train(model, lambda e: ctx.batches("train", cfg.batch_size, shuffle=True, epoch=e, subset=subset),
                    loss_fn, cfg, ctx.batches("validation", EVAL_BATCH, shuffle=False), description, ctx.seed)
    finally:
        for h in hooks:
            h.remove()
    if masks:  # belt and braces: exact zeros whatever the optimizer did numerically
        with torch.no_grad():
            for p, keep in masks:
                p.mul_(keep)
    return {"seconds": round(res.seconds, 1), "history": res.history, "best_val_accuracy": res.best_val_accuracy,
            "teacher": ctx.teacher is not None, "max_train_samples": subset}


# -- the stage --------------------------------------------------------------------------------------------

def _prune_step(model, cfg: PruneCfg, ctx: StageContext, target: float, threshold: Optional[float]):
    layers = encoder_linears(model)
    params = [m.weight for _, m in layers]
    if cfg.method == "threshold":
        masks = [p.detach().abs() >= threshold for p in params]
    else:
        if cfg.method == "taylor":
            scores = taylor_scores(model, params, ctx, cfg.calibration_batches)
        else:
            scores = [p.detach().abs().float() for p in params]
        masks = masks_for(scores, target, cfg.scope)
    with torch.no_grad():
        for p, keep in zip(params, masks):
            p.mul_(keep.to(p.dtype))
    return list(zip(params, [k.to(params[0].dtype) for k in masks]))


@STAGES.register("prune")
def prune(model, cfg: PruneCfg, ctx: StageContext):
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
        masks = _prune_step(model, cfg, ctx, target, thr)
        entry = {"step": t, "sparsity": round(sparsity(model), 6)}
        if cfg.method != "threshold":
            entry["target_sparsity"] = round(target, 6)
        else:
            entry["threshold"] = thr
        if step_recovery is not None:
            entry["recovery"] = recover(model, step_recovery, ctx, f"prune recovery {t}/{steps}", masks)
        history.append(entry)
    model.eval()
    ctx.metrics.update({"method": cfg.method, "scope": cfg.scope, "schedule": cfg.schedule,
                        "sparsity": round(sparsity(model), 6),
                        "target_sparsity": cfg.sparsity if cfg.method != "threshold" else None,
                        "threshold": cfg.threshold, "steps": history,
                        "val_accuracy": accuracy(model, ctx.batches("validation", EVAL_BATCH, shuffle=False)),
                        "test_accuracy": accuracy(model, ctx.batches("test", EVAL_BATCH, shuffle=False))})
    return model
