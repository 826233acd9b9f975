"""Structured pruning: attention heads and FFN intermediate neurons ranked by importance and cut out of the
weight matrices, so the saved file, the exported graph and its matmuls are smaller.

Importance of a head or neuron is the sum of its weights' scores, first-order Taylor or magnitude
(compress/importance.py).

Heads are ranked globally (each layer's scores normalised to sum 1, so layers compare; Michel et al. 2019),
keeping >= min_heads_per_layer per layer: per-layer head counts may differ. FFN neurons are cut uniformly:
the same count in every layer, ranked within the layer. Why uniform: BertConfig has one intermediate_size,
and from_pretrained must rebuild the smaller shapes from config.json alone; per-layer FFN widths would need a
custom config/model class that exporters and users do not know.

Slicing is done here with index_select (transformers >= 5 removed prune_heads), through the family's adapter
(families.py: where Q/K/V, the output projection and the FFN live, fused or gated). The result is recorded the
way the configs already understand: `pruned_heads` {layer: [original head ids]} and the intermediate size, so
`from_pretrained` rebuilds exactly these shapes (transformers 4.57 applies config.pruned_heads in
init_weights). A family whose config cannot say per-layer head counts (Family.prune_heads False: DeBERTa-v2,
ModernBERT) gets its FFN cut only; `plan` refuses heads_fraction there (families.check_family). torch is imported
inside the functions: `check_plan` runs in `edgecompress plan`, which must not import torch.
"""
from __future__ import annotations

from typing import Optional

from edgecompress.compress.base import StageContext, StageResult, Teacher, register_stage
from edgecompress.compress.importance import head_neuron_scores
from edgecompress.errors import UserInputError
from edgecompress.families import attr, family_of
from edgecompress.recipe import StructuredPruneCfg


def _layers(model):
    return family_of(model).layer_list(model)


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


def _set(obj, path: str, value) -> None:
    parent, _, name = path.rpartition(".")
    setattr(attr(obj, parent) if parent else obj, name, value)


def remove_heads(model, li: int, heads: list[int]) -> None:
    """Cut current heads `heads` of layer li from Q/K/V (rows) and O (columns); record original ids in the config."""
    import torch
    if not heads:
        return
    fam = family_of(model)
    if not fam.prune_heads:
        raise UserInputError(f"prune_structured: {fam.model_type} cannot rebuild per-layer head counts from "
                             f"config.json, so its heads are not cut; set heads_fraction: 0")
    L, layer = fam.layer, _layers(model)[li]
    n, d = fam.heads(layer)
    keep_heads = [h for h in range(n) if h not in set(heads)]
    keep = torch.tensor([h * d + i for h in keep_heads for i in range(d)], dtype=torch.long)
    for path in L.qkv + L.extra_head_rows:
        if attr(layer, path, None) is not None:
            _set(layer, path, _slice_linear(attr(layer, path), keep, 0))
    _set(layer, L.attn_out, _slice_linear(attr(layer, L.attn_out), keep, 1))
    a = attr(layer, L.attention)
    setattr(a, L.heads_attr, len(keep_heads))
    setattr(a, L.all_head_attr, len(keep_heads) * d)
    # HF keeps the cut heads' original ids where its prune_heads does; heads already removed are gone from the
    # current numbering: map current -> original.
    holder = attr(layer, L.pruned_heads_on)
    prev = set(getattr(holder, "pruned_heads", set()))
    original = [h for h in range(fam.dims(model.config)["num_attention_heads"]) if h not in prev]
    holder.pruned_heads = prev | {original[h] for h in heads}
    pruned = {int(k): list(v) for k, v in (model.config.pruned_heads or {}).items()}
    pruned[li] = sorted(holder.pruned_heads)
    model.config.pruned_heads = pruned


def shrink_ffn(model, keeps: list) -> None:
    """Keep the given neuron indices in every layer (all the same length: the config has one intermediate size)."""
    import torch
    sizes = {len(k) for k in keeps}
    if len(sizes) != 1:
        raise ValueError(f"FFN widths must be uniform across layers, got {sorted(sizes)}")
    fam = family_of(model)
    L = fam.layer
    for layer, keep in zip(_layers(model), keeps):
        w_in = attr(layer, L.ffn_in)
        rows = keep
        if L.ffn_glu:  # [input; gate]: the neuron's row in each half
            half = w_in.weight.shape[0] // 2
            rows = torch.cat([keep, keep + half])
        _set(layer, L.ffn_in, _slice_linear(w_in, rows, 0))
        _set(layer, L.ffn_out, _slice_linear(attr(layer, L.ffn_out), keep, 1))
    fam.set_dims(model.config, intermediate_size=sizes.pop())


def heads_per_layer(model) -> list[int]:
    fam = family_of(model)
    return [fam.heads(layer)[0] for layer in _layers(model)]


@register_stage("prune_structured")
def prune_structured(model, tokenizer, cfg: StructuredPruneCfg, ctx: StageContext,
                     teacher: Optional[Teacher] = None) -> StageResult:
    import torch
    from edgecompress.compress.kd import recover, split_metrics
    from edgecompress.modeling import count_params

    fam = family_of(model)
    why = fam.refusal("prune_structured", cfg)  # the same line plan gives (families.check_family)
    if why:
        raise UserInputError(f"prune_structured: {fam.model_type} {why}")
    params_before, heads_before = count_params(model), heads_per_layer(model)
    inter_before = fam.dims(model.config)["intermediate_size"]
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
               "intermediate_size_before": inter_before,
               "intermediate_size": fam.dims(model.config)["intermediate_size"]}
    if cfg.recovery is not None:
        metrics.update({f"{k}_before_recovery": v for k, v in
                        split_metrics(model, tokenizer, ctx, teacher, "validation").items()})
        metrics["recovery"] = recover(model, tokenizer, cfg.recovery, ctx, teacher, "structured recovery")
    metrics.update(split_metrics(model, tokenizer, ctx, teacher, "validation"))
    metrics.update(split_metrics(model, tokenizer, ctx, teacher, "test"))
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
