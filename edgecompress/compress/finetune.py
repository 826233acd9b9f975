"""Fine-tune a classifier on the labels: the teacher, when its source ships no task head.

Not a recipe stage (a recipe compresses a teacher that already classifies); the pipeline calls it directly for
the teacher step, with the same arguments and result as a stage minus the teacher.
"""
from __future__ import annotations

import torch.nn.functional as F

from edgecompress.compress.base import StageContext, StageResult
from edgecompress.compress.train import accuracy, train
from edgecompress.recipe import TrainCfg


def finetune(model, tokenizer, cfg: TrainCfg, ctx: StageContext) -> StageResult:
    val = ctx.eval_batches(tokenizer, "validation")

    def loss_fn(m, inputs, labels, idx):
        loss = F.cross_entropy(m(**inputs).logits, labels)
        return loss, {"ce": float(loss.detach())}

    res = train(model, lambda e: ctx.batches(tokenizer, "train", cfg.batch_size, shuffle=True, epoch=e,
                                             subset=cfg.max_train_samples),
                loss_fn, cfg, val, "fine-tune teacher", ctx.seed, placement=ctx.placement)
    metrics = {"train_seconds": round(res.seconds, 1), "history": res.history, "val_accuracy": res.best_val_accuracy,
               "test_accuracy": accuracy(model, ctx.eval_batches(tokenizer, "test"), ctx.placement)}
    return StageResult(model, tokenizer, metrics)
