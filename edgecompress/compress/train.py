"""The training loop shared by fine-tuning and distillation: AdamW, linear warmup/decay, gradient clipping,
validation after each epoch, best checkpoint (by validation accuracy) kept in memory and restored."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgecompress import progress
from edgecompress.recipe import TrainCfg


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_val_accuracy: float = float("nan")
    seconds: float = 0.0


def to_torch(inputs: dict[str, np.ndarray]):
    import torch
    return {k: torch.from_numpy(v) for k, v in inputs.items()}


def predict_logits(model, batches) -> np.ndarray:
    """Logits in the order of each batch's row index (third element of every batch tuple)."""
    import torch
    model.eval()
    n = sum(len(b[1]) for b in batches)
    out = None
    with torch.no_grad():
        for inputs, _, idx in batches:
            logits = model(**to_torch(inputs)).logits.float().numpy()
            if out is None:
                out = np.zeros((n, logits.shape[1]), dtype=np.float32)
            out[idx] = logits
    return out


def accuracy(model, batches) -> float:
    logits = predict_logits(model, batches)
    labels = np.zeros(len(logits), dtype=np.int64)
    for _, y, idx in batches:
        labels[idx] = y
    return float((logits.argmax(-1) == labels).mean())


def train(model, make_batches: Callable[[int], list], loss_fn: Callable, cfg: TrainCfg, val_batches: list,
          description: str, seed: int = 0) -> TrainResult:
    """make_batches(epoch) -> list of (inputs, labels, row_index); loss_fn(model, inputs, labels, idx) -> (loss, parts)."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    n_full, frac = int(cfg.epochs), cfg.epochs - int(cfg.epochs)
    epoch_plan = [1.0] * n_full + ([frac] if frac > 1e-9 else [])
    per_epoch = [make_batches(e) for e in range(len(epoch_plan))]
    per_epoch = [b[: max(1, math.ceil(len(b) * f))] for b, f in zip(per_epoch, epoch_plan)]
    total_steps = sum(len(b) for b in per_epoch)
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "LayerNorm" in n else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.learning_rate)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total_steps), total_steps)
    result = TrainResult()
    best_state, best_acc = None, -1.0
    for e, epoch_batches in enumerate(per_epoch):
        model.train()
        losses = []
        for inputs, labels, idx in progress.track(epoch_batches, description=f"{description} epoch {e + 1}/{len(per_epoch)}"):
            loss, _ = loss_fn(model, to_torch(inputs), torch.from_numpy(labels), idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        val_acc = accuracy(model, val_batches)
        result.history.append({"epoch": e + 1, "train_loss_first": losses[0], "train_loss_last_10pct":
                               float(np.mean(losses[-max(1, len(losses) // 10):])), "val_accuracy": val_acc,
                               "steps": len(losses)})
        progress.log(f"  {description} epoch {e + 1}: loss {result.history[-1]['train_loss_last_10pct']:.4f}, val acc {val_acc:.4f}")
        if val_acc > best_acc:
            best_acc, best_state = val_acc, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.best_val_accuracy = best_acc
    result.seconds = time.perf_counter() - t0
    return result
