"""Knowledge distillation from a teacher's logits: the loss every stage shares (distill, recovery after pruning or
vocabulary trimming, QAT) and the recovery fine-tune the compressing stages run after they cut.

L = a*CE(labels) + (1-a)*T^2*KL(softmax(t/T) || softmax(s/T)); recovery takes a and T from the stage context
(ctx.kd: the recipe's distill stage), so it trains on the loss the student was distilled with.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from edgecompress.compress.base import StageContext, Teacher
from edgecompress.compute import on_device
from edgecompress.compress.train import predict_logits, train
from edgecompress.recipe import KD_ALPHA, KD_TEMPERATURE, TrainCfg


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            alpha: float = KD_ALPHA, temperature: float = KD_TEMPERATURE) -> tuple[torch.Tensor, dict]:
    # A row without a label of its own (an augmented variant: a negative label) counts only in the KD term.
    labelled = labels >= 0
    ce = (F.cross_entropy(student_logits, labels.clamp_min(0), reduction="none") * labelled).sum() \
        / labelled.sum().clamp_min(1)
    t = temperature
    # KL(p_teacher || p_student) with batchmean, scaled by T^2 so gradients keep their size as T grows (Hinton 2015).
    kl = F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                  reduction="batchmean", log_target=True) * (t * t)
    return alpha * ce + (1 - alpha) * kl, {"ce": float(ce.detach()), "kd": float(kl.detach())}


def recover(model, tokenizer, cfg: TrainCfg, ctx: StageContext, teacher: Optional[Teacher], description: str,
            masks: Optional[list[tuple[torch.nn.Parameter, torch.Tensor]]] = None) -> dict:
    """Fine-tune a compressed model in place under distillation from `teacher` (logit KD + CE with ctx.kd's weights),
    through the shared training loop; returns what it measured. `masks` (param, keep) are held: gradient hooks zero
    the gradients of pruned weights, and with zero gradients AdamW's moments and decoupled weight decay leave them
    at zero.

    The teacher reads its own tokenizer (after vocabulary trimming the student's ids differ); both batch lists come
    from the same subset of the train split, so the row index each batch carries links them. Without a teacher this
    is plain fine-tuning on the labels. task: embedding (ctx.embedding) trains the vectors toward the teacher's with
    the embedding loss and needs the teacher."""
    if ctx.embedding is not None and teacher is None:
        from edgecompress.errors import UserInputError
        raise UserInputError(f"{description}: an embedding recovers toward the teacher's vectors; it needs a teacher")
    subset = cfg.max_train_samples
    teacher_logits = None
    if teacher is not None:
        teacher_logits = torch.from_numpy(ctx.teacher_targets(teacher, "train", subset))

    def loss_fn(m, inputs, labels, idx):
        logits = m(**inputs).logits
        if ctx.embedding is not None:  # vectors against the teacher's for the same rows; labels unused
            return ctx.embedding(logits, teacher_logits[torch.from_numpy(np.asarray(idx))].to(logits.device))
        if teacher_logits is None:
            loss = F.cross_entropy(logits, labels)
            return loss, {"ce": float(loss.detach())}
        t_logits = teacher_logits[torch.from_numpy(np.asarray(idx))].to(logits.device)
        return kd_loss(logits, t_logits, labels, ctx.kd.alpha, ctx.kd.temperature)

    pl = ctx.placement
    with on_device(model, pl):
        # The keep-masks go to the device once, not once per gradient.
        hooks = [p.register_hook(lambda g, keep=keep.to(pl.device): g * keep) for p, keep in (masks or [])]
        try:
            res = train(model, lambda e: ctx.batches(tokenizer, "train", cfg.batch_size, shuffle=True, epoch=e,
                                                     subset=subset),
                        loss_fn, cfg, ctx.eval_batches(tokenizer, "validation"), description, ctx.seed, placement=pl,
                        score=val_score(tokenizer, ctx, teacher))
        finally:
            for h in hooks:
                h.remove()
    if masks:  # belt and braces: exact zeros whatever the optimizer did numerically
        with torch.no_grad():
            for p, keep in masks:
                p.mul_(keep)
    return {"seconds": round(res.seconds, 1), "history": res.history, "best_val_accuracy": res.best_val_accuracy,
            "teacher": teacher is not None, "max_train_samples": subset}


def split_metrics(model, tokenizer, ctx: StageContext, teacher: Optional[Teacher], split: str) -> dict:
    """How good `model` is on a split, in its task's terms: class accuracy (val_accuracy, test_accuracy), or for
    embeddings the mean cosine of its vectors to the teacher's (val_cosine_to_teacher, ...; with embedding.dim to the
    teacher's through the PCA map: the targets it trains toward) and recall@10 of the teacher's ten nearest rows of
    the split among its own ten (val_recall_at_10, ...: what fit selects on; neighbour sets compare at any width)."""
    from edgecompress.compress.train import accuracy
    prefix = {"validation": "val"}.get(split, split)
    if ctx.embedding is None:
        return {f"{prefix}_accuracy": accuracy(model, ctx.eval_batches(tokenizer, split), ctx.placement)}
    from edgecompress.retrieval import recall_at_k
    vecs = predict_logits(model, ctx.eval_batches(tokenizer, split), ctx.placement)
    return {f"{prefix}_cosine_to_teacher": _mean_cosine(vecs, ctx.teacher_targets(teacher, split)),
            f"{prefix}_recall_at_10": recall_at_k(vecs, ctx.teacher_outputs(teacher, split), 10)}


def _mean_cosine(vecs: np.ndarray, ref: np.ndarray) -> float:
    from edgecompress.retrieval import row_cosine
    return float(row_cosine(vecs, ref).mean())


def val_score(tokenizer, ctx: StageContext, teacher: Optional[Teacher]):
    """The training loop's validation score for this task: None (class accuracy, train's default) or, for
    embeddings, a function model -> mean cosine to the teacher on the validation split. Cosine, not recall: it is
    computed each epoch, and recall's all-pairs neighbour search is what the stage reports once at its end."""
    if ctx.embedding is None:
        return None
    return lambda m: _mean_cosine(predict_logits(m, ctx.eval_batches(tokenizer, "validation"), ctx.placement),
                                  ctx.teacher_targets(teacher, "validation"))
