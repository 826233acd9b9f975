"""Fine-tune a classifier on the labels (the teacher, when its source ships no task head)."""
from __future__ import annotations

import torch.nn.functional as F

from edgecompress.compress.base import StageContext
from edgecompress.compress.train import accuracy, train
from edgecompress.recipe import TrainCfg
from edgecompress.registry import STAGES

EVAL_BATCH = 64


@STAGES.register("finetune")
def finetune(model, cfg: TrainCfg, ctx: StageContext):
    val = ctx.batches("validation", EVAL_BATCH, shuffle=False)

    def loss_fn(m, inputs, labels, idx):
        loss = F.cross_entropy(m(**inputs).logits, labels)
        return loss, {"ce": float(loss.detach())}

    res = train(model, lambda e: ctx.batches("train", cfg.batch_size, shuffle=True, epoch=e, subset=cfg.max_train_samples),
                loss_fn, cfg, val, "fine-tune teacher", ctx.seed)
    ctx.metrics.update({"train_seconds": round(res.seconds, 1), "history": res.history,
                        "val_accuracy": res.best_val_accuracy,
                        "test_accuracy": accuracy(model, ctx.batches("test", EVAL_BATCH, shuffle=False))})
    return model
