"""Knowledge distillation: L = a*CE(labels) + (1-a)*T^2*KL(softmax(t/T) || softmax(s/T)).

The student is built from teacher layers (DistilBERT-style). Teacher logits are computed once for the
training rows and reused every epoch: a teacher forward costs about as much as a student step, and the
teacher does not change.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edgecompress.compress.base import StageContext
from edgecompress.compress.train import accuracy, predict_logits, train
from edgecompress.errors import UserInputError
from edgecompress.modeling import count_params, student_from_teacher_layers
from edgecompress.recipe import DistillCfg
from edgecompress.registry import STAGES

EVAL_BATCH = 64


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            alpha: float, temperature: float) -> tuple[torch.Tensor, dict]:
    ce = F.cross_entropy(student_logits, labels)
    t = temperature
    # KL(p_teacher || p_student) with batchmean, scaled by T^2 so gradients keep their size as T grows (Hinton 2015).
    kl = F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                  reduction="batchmean", log_target=True) * (t * t)
    return alpha * ce + (1 - alpha) * kl, {"ce": float(ce.detach()), "kd": float(kl.detach())}


@STAGES.register("distill")
def distill(teacher, cfg: DistillCfg, ctx: StageContext):
    if teacher is None:
        raise UserInputError("distill needs a teacher; set teacher.source")
    student = student_from_teacher_layers(teacher, cfg.student.from_teacher_layers)
    subset = cfg.train.max_train_samples
    # Teacher logits for every train row, once, indexed by the row index every batch carries.
    all_train = ctx.batches("train", EVAL_BATCH, shuffle=False, subset=subset)
    teacher_logits = torch.from_numpy(predict_logits(teacher, all_train))

    def loss_fn(m, inputs, labels, idx):
        return kd_loss(m(**inputs).logits, teacher_logits[torch.from_numpy(np.asarray(idx))], labels,
                       cfg.alpha, cfg.temperature)

    val = ctx.batches("validation", EVAL_BATCH, shuffle=False)
    res = train(student, lambda e: ctx.batches("train", cfg.train.batch_size, shuffle=True, epoch=e, subset=subset),
                loss_fn, cfg.train, val, "distill student", ctx.seed)
    ctx.metrics.update({"train_seconds": round(res.seconds, 1), "history": res.history,
                        "val_accuracy": res.best_val_accuracy, "params": count_params(student),
                        "teacher_params": count_params(teacher),
                        "test_accuracy": accuracy(student, ctx.batches("test", EVAL_BATCH, shuffle=False))})
    return student
