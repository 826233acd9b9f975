"""Structured pruning: attention heads and FFN intermediate neurons ranked by importance and cut out of the
weight matrices, so the saved file, the exported graph and its matmuls are smaller.

Importance of a head or neuron is the sum of its weights' scores, first-order Taylor or magnitude
(compress/importance.py).

Heads are ranked globally (each layer's scores normalised to sum 1, so layers compare; Michel et al. 2019),
keeping >= min_heads_per_layer per layer: per-layer head counts may differ. FFN neurons are cut uniformly:
the same count in every layer, ranked within the layer. Why uniform: BertConfig has one intermediate_size,
and from_pretrained must rebuild the smaller shapes from config.json alone; per-layer FFN widths would need a
custom config/model class that exporters and users do not know.

Slicing is done here with index_select (transformers >= 5 removed prune_heads). The result is recorded the
way BertConfig already understands: `pruned_heads` {layer: [original head ids]} and `intermediate_size`, so
`from_pretrained` rebuilds exactly these shapes (transformers 4.57 applies config.pruned_heads in
init_weights). torch is imported inside the functions: `check_plan` runs in `edgecompress plan`, which must
not import torch.
"""
from __future__ import annotations

from typing import Optional

from edgecompress.compress.base import StageContext, StageResult, Teacher, register_stage
from edgecompress.compress.importance import head_neuron_scores
from edgecompress.data import EVAL_BATCH
from edgecompress.errors import UserInputError
from edgecompress.recipe import StructuredPruneCfg


def _layers(model):
    enc = getattr(model.base_model, "encoder", None)
    if enc is None or not hasattr(enc, "layer"):
        raise UserInputError(f"prune_structured supports BERT-family encoders; {type(model).__name__} has no encoder.layer")
    return list(enc.layer)


def choose_heads(head_scores: list, n_remove: int, min_per_layer: int) -> list[list[int]]:
    """Global ranking of layer-normalised scores; the lowest go first unless their layer is at its minimum."""
    cands = []
    for li, s in enumerate(head_scores):
        norm = s / s.sum().clamp_min(1e-12)
        cands += [(float(v), li, h) for h, v in enumerate(norm)]
    cands.sort()
    left = [len(s) for s in head_scores]
    removed: list[list[int]] = [[] for _ in head_scores]
    for _, li, h in cands:
        if n_remove == 0:
            break
        if left[li] > min_per_layer:
            removed[li].append(h)
            left[li] -= 1
            n_remove -= 1
    return [sorted(r) for r in removed]


def _slice_linear(lin, keep, dim: int):
    """A new Linear with only the `keep` output rows (dim 0) or input columns (dim 1)."""
    import torch
    w = lin.weight.detach().index_select(dim, keep).clone()
    new = torch.nn.Linear(w.shape[1], w.shape[0], bias=lin.bias is not None, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if lin.bias is not None:
            new.bias.copy_(lin.bias.detach() if dim == 1 else lin.bias.detach().index_select(0, keep))
    new.train(lin.training)
    return new


def remove_heads(model, li: int, heads: list[int]) -> None:
    """Cut current heads `heads` of layer li from Q/K/V (rows) and O (columns); record original ids in the config."""
    import torch
    if not heads:
        return
    att = _layers(model)[li].attention
    sa = att.self
    n, d = sa.num_attention_heads, sa.attention_head_size
    keep_heads = [h for h in range(n) if h not in set(heads)]
    keep = torch.tensor([h * d + i for h in keep_heads for i in range(d)], dtype=torch.long)
    sa.query, sa.key, sa.value = (_slice_linear(sa.query, keep, 0), _slice_linear(sa.key, keep, 0),
                                  _slice_linear(sa.value, keep, 0))
    att.output.dense = _slice_linear(att.output.dense, keep, 1)
    sa.num_attention_heads = len(keep_heads)
    sa.all_head_size = len(keep_heads) * d
    # Heads already removed earlier are gone from the current numbering: map current -> original ids.
    prev = set(getattr(att, "pruned_heads", set()))
    original = [h for h in range(model.config.num_attention_heads) if h not in prev]
    att.pruned_heads = prev | {original[h] for h in heads}
    pruned = {int(k): list(v) for k, v in (model.config.pruned_heads or {}).items()}
    pruned[li] = sorted(att.pruned_heads)
    model.config.pruned_heads = pruned


def shrink_ffn(model, keeps: list) -> None:
    """Keep the given neuron indices in every layer (all the same length: BertConfig has one intermediate_size)."""
    sizes = {len(k) for k in keeps}
    if len(sizes) != 1:
        raise ValueError(f"FFN widths must be uniform across layers, got {sorted(sizes)}")
    for layer, keep in zip(_layers(model), keeps):
        layer.intermediate.dense = _slice_linear(layer.intermediate.dense, keep, 0)
        layer.output.dense = _slice_linear(layer.output.dense, keep, 1)
    model.config.intermediate_size = sizes.pop()


def heads_per_layer(model) -> list[int]:
    return [layer.attention.self.num_attention_heads for layer in _layers(model)]


@register_stage("prune_structured")
def prune_structured(model, tokenizer, cfg: StructuredPruneCfg, ctx: StageContext,
                     teacher: Optional[Teacher] = None) -> StageResult:
    import torch
    from edgecompress.compress.kd import recover
    from edgecompress.compress.train import accuracy
    from edgecompress.modeling import count_params

    params_before, heads_before = count_params(model), heads_per_layer(model)
    inter_before = model.config.intermediate_size
    scores = head_neuron_scores(model, _layers(model), cfg.importance, tokenizer, ctx, cfg.calibration_batches)
    total_heads = sum(heads_before)
    n_remove = round(cfg.heads_fraction * total_heads)
    if total_heads - n_remove < cfg.min_heads_per_layer * len(heads_before):
        raise UserInputError(f"prune_structured: removing {n_remove} of {total_heads} heads leaves fewer than "
                             f"min_heads_per_layer={cfg.min_heads_per_layer} in some layer; lower heads_fraction")
    removed = choose_heads([s for s, _ in scores], n_remove, cfg.min_heads_per_layer)
    for li, heads in enumerate(removed):
        remove_heads(model, li, heads)
    k = round(cfg.ffn_fraction * inter_before)
    if k:
        if k >= inter_before:
            raise UserInputError(f"prune_structured: ffn_fraction {cfg.ffn_fraction} removes every FFN neuron; lower it")
        # The k lowest per layer; the kept ones stay in their original order.
        shrink_ffn(model, [torch.sort(torch.argsort(s, stable=True)[k:]).values for _, s in scores])
    model.eval()
    metrics = {"importance": cfg.importance, "params_before": params_before, "params": count_params(model),
               "heads_per_layer_before": heads_before, "heads_per_layer": heads_per_layer(model),
               "removed_heads": {i: h for i, h in enumerate(removed) if h},
               "intermediate_size_before": inter_before, "intermediate_size": model.config.intermediate_size}
    val = ctx.batches(tokenizer, "validation", EVAL_BATCH, shuffle=False)
    if cfg.recovery is not None:
        metrics["val_accuracy_before_recovery"] = accuracy(model, val)
        metrics["recovery"] = recover(model, tokenizer, cfg.recovery, ctx, teacher, "structured recovery")
    metrics["val_accuracy"] = accuracy(model, val)
    metrics["test_accuracy"] = accuracy(model, ctx.batches(tokenizer, "test", EVAL_BATCH, shuffle=False))
    return StageResult(model, tokenizer, metrics)


def check_plan(stages, teacher_cfg: dict) -> None:
    """Plan-time checks of the pruning stages against the model they will see (no torch): heads and neurons
    left per layer, walking the stage chain so a later stage sees what an earlier one left."""
    layers, heads = teacher_cfg.get("num_hidden_layers"), teacher_cfg.get("num_attention_heads")
    inter = teacher_cfg.get("intermediate_size")
    if not (layers and heads and inter):
        return
    heads_total = layers * heads
    for i, s in enumerate(stages):
        where = f"stages[{i}] ({s.kind})"
        if s.kind == "distill":
            if s.student.from_teacher_layers is not None:
                layers = len(s.student.from_teacher_layers)
            else:
                c = s.student.config
                layers = c.num_hidden_layers
                heads = c.num_attention_heads or heads
                inter = c.intermediate_size or inter
            heads_total = layers * heads
        elif s.kind == "prune_structured":
            if s.min_heads_per_layer > heads:
                raise UserInputError(f"{where}: min_heads_per_layer {s.min_heads_per_layer} exceeds the {heads} heads "
                                     f"per layer the model has; lower it")
            left = heads_total - round(s.heads_fraction * heads_total)
            if left < s.min_heads_per_layer * layers:
                raise UserInputError(f"{where}: heads_fraction {s.heads_fraction} leaves {left} of {heads_total} heads, "
                                     f"fewer than min_heads_per_layer={s.min_heads_per_layer} x {layers} layers; lower it")
            k = round(s.ffn_fraction * inter)
            if k >= inter:
                raise UserInputError(f"{where}: ffn_fraction {s.ffn_fraction} removes all {inter} FFN neurons per "
                                     f"layer; keep at least one")
            heads_total, inter = left, inter - k
