"""The training loop shared by fine-tuning and distillation: AdamW, linear warmup/decay, gradient clipping,
validation after each epoch, best checkpoint (by validation accuracy) kept in memory and restored, optional
early stopping by patience.

Multi-process: when the environment says distributed (WORLD_SIZE > 1, as set by `accelerate launch` or
`torchrun`), the loop uses `accelerate.Accelerator`: the model and optimizer are prepared (DDP, gradients
all-reduced), each rank takes every world_size-th batch, and the unwrapped model is returned. Not a
home-made launcher: the launcher is accelerate's / torch's.

Placement: every pass runs on the run's `compute.Placement` (device + autocast precision): the model is moved there
for the pass and back afterwards, batches are built as tensors once per epoch (pinned on CUDA) and copied per
step. Multi-process runs use the same autocast and gradient scaler as single-process ones; accelerate is told
mixed_precision "no" so precision is applied once, by this loop, for the student and the teacher alike."""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from edgecompress import progress
from edgecompress.compute import CPU, Placement, autocast, grad_scaler, on_device, pin, place_batch
from edgecompress.recipe import TrainCfg


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_val_accuracy: float = float("nan")
    seconds: float = 0.0
    stopped_early: bool = False


def to_torch(inputs: dict[str, np.ndarray], placement: Placement = CPU):
    return place_batch(inputs, placement)


def world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def is_distributed() -> bool:
    return world_size() > 1


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def process_group():
    """torch.distributed (its process group initialised through accelerate) when launched multi-process, else None."""
    if not is_distributed():
        return None
    import torch
    import torch.distributed as dist
    if not dist.is_initialized():
        make_accelerator_state = __import__("accelerate").PartialState
        make_accelerator_state(cpu=not torch.cuda.is_available())
    return dist


def predict_logits(model, batches, placement: Placement = CPU) -> np.ndarray:
    """Logits in the order of each batch's row index (third element of every batch tuple), as fp32 on the CPU."""
    import torch
    model.eval()
    n = sum(len(b[1]) for b in batches)
    out = None
    with torch.no_grad(), on_device(model, placement):
        for inputs, _, idx in batches:
            with autocast(placement):
                logits = model(**place_batch(inputs, placement)).logits
            logits = logits.float().cpu().numpy()
            if out is None:
                out = np.zeros((n, logits.shape[1]), dtype=np.float32)
            out[idx] = logits
    return out


def accuracy(model, batches, placement: Placement = CPU) -> float:
    logits = predict_logits(model, batches, placement)
    labels = np.zeros(len(logits), dtype=np.int64)
    for _, y, idx in batches:
        labels[idx] = y
    return float((logits.argmax(-1) == labels).mean())


def make_accelerator(find_unused_parameters: bool = False, placement: Placement = CPU):
    """An Accelerator when launched multi-process, else None (the plain single-process loop)."""
    if not is_distributed():
        return None
    try:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs
    except ImportError:
        from edgecompress.errors import UserInputError
        raise UserInputError("a multi-process launch (WORLD_SIZE > 1) needs accelerate; run: pip install accelerate==1.15.0") from None
    # On CPU accelerate picks gloo, on GPUs NCCL. Precision is this loop's (autocast + scaler), not accelerate's.
    return Accelerator(cpu=not placement.accelerated, mixed_precision="no",
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)])


def _split_epochs(make_batches: Callable[[int], list], cfg: TrainCfg, ws: int, rk: int) -> list:
    """Each epoch's batch list: a fractional last epoch is cut short; with ws > 1 ranks, this rank's share. With
    cfg.min_steps, epochs are added until this rank makes at least that many steps."""
    first = make_batches(0)
    epochs = cfg.epochs
    per_rank = max(1, len(first) // ws)
    if cfg.min_steps is not None and per_rank * epochs < cfg.min_steps:
        epochs = cfg.min_steps / per_rank
    n_full, frac = int(epochs), epochs - int(epochs)
    epoch_plan = [1.0] * n_full + ([frac] if frac > 1e-9 else [])
    per_epoch = [first] + [make_batches(e) for e in range(1, len(epoch_plan))]
    per_epoch = [b[: max(1, math.ceil(len(b) * f))] for b, f in zip(per_epoch, epoch_plan)]
    if ws > 1:
        # Every rank builds the same (seeded) batch order and takes its share; equal counts per rank, so no rank
        # waits in an all-reduce the others never reach.
        per_epoch = [b[: max(ws, len(b) // ws * ws)][rk::ws] if len(b) >= ws else b for b in per_epoch]
    return per_epoch


def _optimizer(model, cfg: TrainCfg, total_steps: int):
    import torch
    from transformers import get_linear_schedule_with_warmup
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "LayerNorm" in n else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.learning_rate)
    return opt, get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total_steps), total_steps)


def _run_epoch(model, batches: list, loss_fn: Callable, opt, sched, acc_, placement: Placement, scaler,
               description: str) -> list[float]:
    import torch
    model.train()
    losses = []
    for inputs, labels, idx in progress.track(pin(batches, placement), description=description):
        with autocast(placement):
            loss, _ = loss_fn(model, place_batch(inputs, placement), place_batch(labels, placement), idx)
        opt.zero_grad(set_to_none=True)
        if acc_ is not None:
            acc_.backward(scaler.scale(loss))
        else:
            scaler.scale(loss).backward()
        scaler.unscale_(opt)  # clip the true gradients, not the fp16-scaled ones (no-op when the scaler is off)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        sched.step()
        losses.append(float(loss.detach()))
    return losses


def train(model, make_batches: Callable[[int], list], loss_fn: Callable, cfg: TrainCfg, val_batches: list,
          description: str, seed: int = 0, *, patience: Optional[int] = None, select_best: bool = True,
          find_unused_parameters: bool = False, placement: Placement = CPU,
          score: Optional[Callable] = None) -> TrainResult:
    """make_batches(epoch) -> list of (inputs, labels, row_index); loss_fn(model, inputs, labels, idx) -> (loss, parts),
    called under the placement's autocast with inputs and labels already on its device.

    score: model -> validation score, higher is better (None: accuracy on val_batches; embeddings: cosine to the
    teacher). patience: stop after that many epochs without a validation-score gain. select_best=False keeps the last
    weights (a phase whose logits are not trained yet has a meaningless validation accuracy). The model trains on
    `placement` and is back where it came from (the CPU, for a stage) when this returns."""
    import torch
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    acc_ = make_accelerator(find_unused_parameters, placement)
    ws, rk = (acc_.num_processes, acc_.process_index) if acc_ else (1, 0)
    per_epoch = _split_epochs(make_batches, cfg, ws, rk)
    result = TrainResult()
    with on_device(model, placement):
        # The optimizer is made after the move: AdamW's state then lives beside the parameters.
        opt, sched = _optimizer(model, cfg, sum(len(b) for b in per_epoch))
        plain, scaler = model, grad_scaler(placement)
        if acc_ is not None:
            model, opt = acc_.prepare(model, opt)
        best_state, best_acc, since_best = None, -1.0, 0
        for e, epoch_batches in enumerate(per_epoch):
            losses = _run_epoch(model, epoch_batches, loss_fn, opt, sched, acc_, placement, scaler,
                                f"{description} epoch {e + 1}/{len(per_epoch)}")
            val_acc = accuracy(plain, val_batches, placement) if score is None else score(plain)
            name = "val_accuracy" if score is None else "val_score"
            result.history.append({"epoch": e + 1, "train_loss_first": losses[0], "train_loss_last_10pct":
                                   float(np.mean(losses[-max(1, len(losses) // 10):])), name: val_acc,
                                   "steps": len(losses)})
            progress.log(f"  {description} epoch {e + 1}: loss {result.history[-1]['train_loss_last_10pct']:.4f}, "
                         f"{'val acc' if score is None else 'val score'} {val_acc:.4f}")
            if not select_best:
                best_acc = val_acc
                continue
            if val_acc > best_acc:
                # Kept on the CPU: a second copy of the weights must not cost accelerator memory.
                best_acc, best_state, since_best = val_acc, {k: v.detach().to("cpu", copy=True) for k, v in
                                                             plain.state_dict().items()}, 0
            else:
                since_best += 1
                if patience is not None and since_best >= patience and e + 1 < len(per_epoch):
                    result.stopped_early = True
                    progress.log(f"  {description}: early stop after epoch {e + 1} ({patience} without a val-accuracy gain)")
                    break
        if best_state is not None:
            plain.load_state_dict(best_state)
        if acc_ is not None:
            acc_.wait_for_everyone()
    plain.eval()
    result.best_val_accuracy = best_acc
    result.seconds = time.perf_counter() - t0
    return result
