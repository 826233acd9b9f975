"""Knowledge distillation: L = kd_loss (compress/kd.py: a*CE(labels) + (1-a)*T^2*KL) + sum_i w_i * match_i.

The student is built from teacher layers (DistilBERT-style) or from a config (narrower/shallower, see
modeling.student_from_config). Intermediate matches (TinyBERT/MiniLM-style) compare hidden states (MSE or
cosine, through a learned nn.Linear when the widths differ; the projection trains with the student and is
dropped afterwards) and attention distributions (KL over each query row, or MSE; padded positions masked).

Caching: with logit KD only, the teacher's logits are computed once for the training rows and reused every
epoch (the teacher does not change). Intermediate matches need the teacher's hidden states / attention maps,
and caching those is not an option: 12.7k rows x 7 hidden states x ~40 tokens x 384 floats is ~5 GB, and the
attention maps are heads x seq^2 per layer on top. So the teacher runs on the fly under no_grad, inside the
same step. The two_phase schedule uses the cache again in its logit phase.

The distiller sees models only through the adaptor (compress/adaptor.py) and builds students through the
family table (families.py), so any supported *ForSequenceClassification encoder works.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgecompress import progress
from edgecompress.compress.augment import augmented
from edgecompress.compress.adaptor import Adapted, adapt, eager_attention, hidden_width
from edgecompress.compress.base import StageContext, StageResult, Teacher, register_stage
from edgecompress.compress.kd import kd_loss, split_metrics, val_score
from edgecompress.compress.train import is_distributed, train
from edgecompress.compress.vocabulary import token_counts, tokens_for_coverage, trim_to_corpus
from edgecompress.compute import on_device
from edgecompress.errors import UserInputError
from edgecompress.families import canonical, family_of
from edgecompress.modeling import check_layer_map, count_params, student_from_config, student_from_teacher_layers
from edgecompress.recipe import DistillCfg, MatchCfg


def hidden_loss(student_h: torch.Tensor, teacher_h: torch.Tensor, mask: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """student_h already projected to the teacher's width; (batch, seq, width). Padded tokens do not count.
    mse: mean squared error per element over real tokens; cosine: mean over real tokens of 1 - cos."""
    m = mask.to(student_h.dtype)
    if kind == "cosine":
        per_tok = 1 - F.cosine_similarity(student_h, teacher_h, dim=-1)
        return (per_tok * m).sum() / m.sum().clamp_min(1)
    sq = (student_h - teacher_h).pow(2).mean(-1)
    return (sq * m).sum() / m.sum().clamp_min(1)


def attention_loss(student_a: torch.Tensor, teacher_a: torch.Tensor, mask: torch.Tensor, kind: str = "kl") -> torch.Tensor:
    """(batch, heads, query, key) attention distributions. When head counts differ both sides are averaged over
    heads (the mean of distributions is a distribution), so a 8-head student can still match a 12-head teacher.
    kl: KL(teacher row || student row), averaged over real query rows and heads (padded keys hold ~0 mass on both
    sides; padded query rows are excluded). mse: over real (query, key) pairs."""
    if student_a.shape[1] != teacher_a.shape[1]:
        student_a, teacher_a = student_a.mean(1, keepdim=True), teacher_a.mean(1, keepdim=True)
    m = mask.to(student_a.dtype)
    rows = m[:, None, :].expand(-1, student_a.shape[1], -1)             # (batch, heads, query)
    if kind == "mse":
        pair = rows[..., None] * m[:, None, None, :]
        return ((student_a - teacher_a).pow(2) * pair).sum() / pair.sum().clamp_min(1)
    kl_rows = (torch.xlogy(teacher_a, teacher_a) - teacher_a * torch.log(student_a.clamp_min(1e-12))).sum(-1)
    return (kl_rows * rows).sum() / rows.sum().clamp_min(1)


def _hidden_index(layer: int) -> int:
    return layer + 1  # hidden[0] is the embedding output (layer -1)


class Distiller(nn.Module):
    """The student plus one projection per hidden match whose widths differ. Projections run inside forward so
    DistributedDataParallel sees them; at eval time forward is the plain student."""

    def __init__(self, student, matches: list[MatchCfg], teacher_width: int, init_dims=None):
        super().__init__()
        self.student = student
        self.matches = list(matches)
        self.use_matches = bool(matches)
        self.need_attention = any(m.feature == "attention" for m in matches)
        sw = hidden_width(student)
        self.proj = nn.ModuleDict()
        for i, m in enumerate(matches):
            if m.feature == "hidden" and sw != teacher_width:
                lin = nn.Linear(sw, teacher_width)
                if init_dims is not None and len(init_dims) == sw:
                    # The student kept these teacher dims at init: start from the map that puts them back.
                    with torch.no_grad():
                        lin.weight.zero_()
                        lin.bias.zero_()
                        lin.weight[torch.as_tensor(init_dims), torch.arange(sw)] = 1.0
                self.proj[str(i)] = lin

    def forward(self, input_ids=None, attention_mask=None, **kw):
        want = self.training and self.use_matches
        out = adapt(self.student, {"input_ids": input_ids, "attention_mask": attention_mask, **kw},
                    hidden=want, attention=want and self.need_attention)
        if not want:
            return Adapted(logits=out.logits)
        hid, att = [], []
        for i, m in enumerate(self.matches):
            if m.feature == "hidden":
                h = out.hidden[_hidden_index(m.student_layer)]
                hid.append(self.proj[str(i)](h) if str(i) in self.proj else h)
                att.append(None)
            else:
                hid.append(None)
                att.append(out.attention[m.student_layer])
        return Adapted(logits=out.logits, hidden=tuple(hid), attention=tuple(att))


def match_losses(s: Adapted, t: Adapted, matches: list[MatchCfg], mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    total, parts = 0.0, {}
    for i, m in enumerate(matches):
        if m.feature == "hidden":
            v = hidden_loss(s.hidden[i], t.hidden[_hidden_index(m.teacher_layer)], mask, m.loss)
        else:
            v = attention_loss(s.attention[i], t.attention[m.teacher_layer], mask, m.loss)
        parts[f"{m.feature}{m.teacher_layer}->{m.student_layer}"] = float(v.detach())
        total = total + m.weight * v
    return total, parts


def build_student(teacher, cfg: DistillCfg):
    if cfg.student.config is not None:
        return student_from_config(teacher, cfg.student.config)
    return student_from_teacher_layers(teacher, cfg.student.from_teacher_layers)


@register_stage("distill")
def distill(model, tokenizer, cfg: DistillCfg, ctx: StageContext, teacher: Optional[Teacher] = None) -> StageResult:
    """A new student built from `model` (the teacher's: this stage starts from the teacher) and trained against
    teacher.model. Distill is the recipe's first stage, so `tokenizer` is the teacher's; the student reads it too
    unless student.vocab trims the student's vocabulary (the returned tokenizer is the student's)."""
    if teacher is None:
        raise UserInputError("distill needs a teacher; set teacher.source")
    t_model = teacher.model
    # The same check plan runs, against the loaded models: a wrong layer map fails here before any training.
    check_layer_map(cfg, canonical(t_model.config.to_dict()))
    if cfg.schedule == "two_phase" and not cfg.matches:
        raise UserInputError("stages.distill.schedule two_phase needs matches (its first phase trains only them)")
    t_model.eval()
    student = build_student(model, cfg)
    init_report = getattr(student, "init_report", None)
    s_tok, extra = tokenizer, {}
    if ctx.embedding_dim is not None:  # before any augmented copy of ctx: the map is fitted on the run's train split
        extra["embedding_projection"] = _init_projection(student, teacher, ctx, (init_report or {}).get("hidden_dims"))
    if cfg.student.vocab is not None:
        s_tok, extra["vocab"] = _student_vocab(student, tokenizer, cfg.student.vocab, ctx)
    train_ctx = ctx
    if cfg.augment is not None:
        rows = ctx.splits["train"].subset(cfg.train.max_train_samples, ctx.seed)
        grown, extra["augment"] = augmented(rows, cfg.augment, tokenizer.mask_token, ctx.seed)
        # A context of its own: the grown split must not share the run's token and teacher-output caches.
        train_ctx = replace(ctx, splits={**ctx.splits, "train": grown}, _encoded={}, _teacher_out={})
    wrapper = Distiller(student, cfg.matches, hidden_width(t_model), (init_report or {}).get("hidden_dims"))
    phases = _train_phases(wrapper, teacher, s_tok, cfg, ctx, train_ctx)
    student = wrapper.student.eval()  # the projections are dropped here: they only served the loss
    res = phases[-1][1]
    history = [{**h, "phase": name} for name, r in phases for h in r.history]
    metrics = {"train_seconds": round(sum(r.seconds for _, r in phases), 1), "history": history,
               **_val_metrics(student, s_tok, ctx, teacher, res), "stopped_early": res.stopped_early,
               "params": count_params(student), "teacher_params": count_params(t_model),
               "projection_params_dropped": sum(p.numel() for p in wrapper.proj.parameters()),
               "matches": [m.model_dump() for m in cfg.matches], "schedule": cfg.schedule,
               "distributed": is_distributed(),
               "student_config": family_of(student).dims(student.config), **extra,
               **split_metrics(student, s_tok, ctx, teacher, "test")}
    if init_report:
        metrics["student_init"] = {k: v for k, v in init_report.items() if k != "hidden_dims"}
    progress.log(f"  distilled student: {metrics['params']:,} params, "
                 + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in metrics.items() if k.startswith("test_")))
    return StageResult(student, s_tok, metrics)


def _val_metrics(student, tokenizer, ctx: StageContext, teacher: Teacher, res) -> dict:
    """The distilled student's validation score: the best epoch's class accuracy as training measured it, or for
    embeddings the restored best student's split_metrics (recall@10 too, which training does not compute)."""
    if ctx.embedding is None:
        return {"val_accuracy": res.best_val_accuracy}
    return split_metrics(student, tokenizer, ctx, teacher, "validation")


def _init_projection(student, teacher: Teacher, ctx: StageContext, init_dims) -> dict:
    """embedding.dim: the student's projection starts as the targets' fixed PCA map (ctx.target_map), so training
    starts from the PCA solution. A narrower student reads the map's columns of the teacher dims it kept (the
    slicing init's hidden_dims); a random-width student has no such correspondence and takes the first columns."""
    from edgecompress.modeling import set_embedding_projection
    w = ctx.target_map(teacher)
    sw = hidden_width(student)
    exact = sw == w.shape[1]
    if not exact:
        w = w[:, np.asarray(init_dims)] if init_dims is not None and len(init_dims) == sw else w[:, :sw]
    set_embedding_projection(student, torch.from_numpy(np.ascontiguousarray(w)))
    progress.log(f"  embedding projection: {sw} -> {w.shape[0]} dims, PCA of the teacher's train vectors")
    return {"dim": int(w.shape[0]), "width": sw, "init": "pca" if exact else "pca columns of the kept dims",
            "fit_rows": len(ctx.teacher_outputs(teacher, "train"))}


def _student_vocab(student, tokenizer, v, ctx: StageContext):
    """Trim the student's table (in place) as student.vocab says; returns its tokenizer and what was done."""
    texts = ctx.splits["train"].texts
    counts = token_counts(tokenizer, texts)  # once: the coverage rule and the trim read the same counts
    max_tokens = v.max_tokens
    if v.max_unseen is not None:
        max_tokens, unseen = tokens_for_coverage(tokenizer, counts, ctx.splits["validation"].texts, v.max_unseen,
                                                 v.min_count, v.max_tokens)
        if max_tokens is None:
            progress.log(f"  student vocabulary not trimmed: the train split's tokens leave {unseen:.1%} of the "
                         f"validation text's tokens out (max_unseen {v.max_unseen:.1%}); the table keeps the "
                         f"teacher's {len(tokenizer):,} tokens")
            return tokenizer, {"trimmed": False, "validation_unseen": round(unseen, 4), "max_unseen": v.max_unseen}
    new_tok, info = trim_to_corpus(student, tokenizer, texts, v.min_count, max_tokens, counts)
    if v.max_unseen is not None:
        info.update(validation_unseen=round(unseen, 4), max_unseen=v.max_unseen)
    progress.log(f"  student vocabulary: {info['vocab_size']:,} of {info['vocab_size_before']:,} tokens")
    return new_tok, {"trimmed": True, **info}


def _train_phases(wrapper: Distiller, teacher: Teacher, tokenizer, cfg: DistillCfg, ctx: StageContext,
                  train_ctx: StageContext) -> list:
    """Train the student inside `wrapper` on train_ctx's train split (ctx's, or its augmented copy) with `tokenizer`
    (the student's); validation reads ctx. Returns [(phase name, TrainResult)], the intermediate phase first."""
    t_model = teacher.model
    subset = None if train_ctx is not ctx else cfg.train.max_train_samples  # an augmented split is the subset already
    val = ctx.eval_batches(tokenizer, "validation")
    score = val_score(tokenizer, ctx, teacher)
    make = lambda e: train_ctx.batches(tokenizer, "train", cfg.train.batch_size, shuffle=True, epoch=e, subset=subset)  # noqa: E731

    def cached_teacher_logits():
        # Teacher outputs for every train row, once, in the teacher's own ids, indexed by the row index every
        # student batch carries (the student may read other ids: a trimmed vocabulary).
        return torch.from_numpy(train_ctx.teacher_targets(teacher, "train", subset))

    def loss_fn_for(use_matches: bool, use_logits: bool):
        def loss_fn(m, inputs, labels, idx):
            s = m(**inputs)
            parts, total = {}, 0.0
            if use_matches:
                with torch.no_grad():
                    t = adapt(t_model, inputs, hidden=True, attention=wrapper.need_attention)
                total, parts = match_losses(s, t, cfg.matches, inputs["attention_mask"])
                t_logits = t.logits
            if use_logits:
                if not use_matches:
                    t_logits = cached_teacher_logits()[torch.from_numpy(np.asarray(idx))].to(s.logits.device)
                if ctx.embedding is not None:  # the pooled vectors; labels unused
                    if use_matches:  # the live teacher's vectors; the cached ones are targets already
                        t_logits = ctx.to_target(teacher, t_logits)
                    kd, kparts = ctx.embedding(s.logits, t_logits)
                else:
                    kd, kparts = kd_loss(s.logits, t_logits, labels, cfg.alpha, cfg.temperature)
                total, parts = total + kd, {**parts, **kparts}
            return total, parts
        return loss_fn

    # DDP: in the intermediate-only phase the head gets no gradient, in the logit phase the projections get none.
    unused = bool(cfg.matches)
    student = wrapper.student
    phases = []
    # The teacher is on the device for the whole training: intermediate matches run it on every batch.
    with on_device(t_model, ctx.placement), eager_attention(t_model, student, enabled=wrapper.need_attention):
        if cfg.schedule == "two_phase":
            wrapper.use_matches = True
            p1 = cfg.train.model_copy(update={"epochs": cfg.intermediate_epochs})
            r1 = train(wrapper, make, loss_fn_for(True, False), p1, val, "distill (intermediate)", ctx.seed,
                       select_best=False, find_unused_parameters=unused, placement=ctx.placement, score=score)
            phases.append(("intermediate", r1))
    wrapper.use_matches = cfg.schedule == "joint" and bool(cfg.matches)
    with on_device(t_model, ctx.placement), \
            eager_attention(t_model, student, enabled=wrapper.use_matches and wrapper.need_attention):
        res = train(wrapper, make, loss_fn_for(wrapper.use_matches, True), cfg.train, val, "distill student", ctx.seed,
                    patience=cfg.early_stopping_patience, find_unused_parameters=unused, placement=ctx.placement,
                    score=score)
    phases.append(("logits" if cfg.schedule == "two_phase" else "joint", res))
    return phases
