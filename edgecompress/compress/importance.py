"""Importance scores the pruning stages rank by: per weight (unstructured pruning) and per attention head / FFN
neuron (structured pruning).

"magnitude" is |w|; "taylor" is first-order Taylor |w * dL/dw| (CE on labels) accumulated over calibration
batches of the train split: the estimated loss change when a weight is set to zero (Molchanov et al. 2017).
A head's or neuron's score is the sum over the weights that belong to it (Q/K/V rows + biases and O columns for
a head; FFN-in row + bias and FFN-out column for a neuron).

torch is imported inside the functions: structured.py imports this module and `edgecompress plan` imports
structured.py, which must not import torch.
"""
from __future__ import annotations

import dataclasses

from edgecompress import progress
from edgecompress.compress.base import StageContext
from edgecompress.compute import CPU, Placement, autocast, on_device, place_batch

CALIBRATION_BATCH = 16  # rows per calibration batch; the backward pass needs gradients, so smaller than EVAL_BATCH


def calibration_batches(tokenizer, ctx: StageContext, n_batches: int, batch_size: int = CALIBRATION_BATCH) -> list:
    return ctx.batches(tokenizer, "train", batch_size, shuffle=True, subset=n_batches * batch_size)[:n_batches]


def taylor_scores(model, params: list, batches: list, placement: Placement = CPU) -> list:
    """|w * dL/dw| per parameter, summed over `batches` ((inputs, labels, row_index) tuples), as fp32 CPU tensors
    (the masks cut from them are applied on the CPU). The passes run on `placement`, except that fp16 runs as
    fp32: unscaled fp16 gradients underflow to zero and would tie small weights; a few calibration batches do not
    need the speed."""
    import torch
    if placement.precision == "fp16":
        placement = dataclasses.replace(placement, precision="fp32")
    was_training = model.training
    model.eval()  # no dropout: the scores rank weights of the model as it will run
    with on_device(model, placement):
        scores = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        for inputs, labels, _ in progress.track(batches, description="importance (taylor)"):
            model.zero_grad(set_to_none=True)
            with autocast(placement):
                out = model(**place_batch(inputs, placement), labels=place_batch(labels, placement))
            out.loss.backward()
            with torch.no_grad():
                for s, p in zip(scores, params):
                    if p.grad is not None:
                        s += (p.detach() * p.grad).abs()
        model.zero_grad(set_to_none=True)
        scores = [s.cpu() for s in scores]
    model.train(was_training)
    return scores


def magnitude_scores(params: list) -> list:
    return [p.detach().abs().float() for p in params]


def weight_scores(method: str, model, params: list, tokenizer, ctx: StageContext, n_batches: int) -> list:
    """One float tensor per parameter, shaped like it: "taylor" over n_batches calibration batches, else |w|."""
    if method == "taylor":
        return taylor_scores(model, params, calibration_batches(tokenizer, ctx, n_batches), ctx.placement)
    return magnitude_scores(params)


def head_neuron_groups(fam, layer) -> dict:
    """The parameters of one layer whose slices belong to one head / one FFN neuron, by the dim they are sliced on,
    each with its block count (3 for a fused [Q; K; V] projection, 2 for a gated [input; gate] FFN, else 1).
    fam: the model's families.Family (where Q/K/V, the output projection and the FFN live)."""
    from edgecompress.families import attr
    L, qkv_blocks = fam.layer, fam.head_blocks()
    heads = [(p, qkv_blocks) for m in fam.head_row_modules(layer) for p in (m.weight, m.bias) if p is not None]
    ffn_in = attr(layer, L.ffn_in)
    glu = 2 if L.ffn_glu else 1
    return {"head_out": heads,
            "head_in": [(attr(layer, L.attn_out).weight, 1)],
            "ffn_out": [(p, glu) for p in (ffn_in.weight, ffn_in.bias) if p is not None],
            "ffn_in": [(attr(layer, L.ffn_out).weight, 1)]}


def head_neuron_scores(model, layers: list, method: str, tokenizer, ctx: StageContext, n_batches: int) -> list:
    """Per layer: (head scores [n_heads], neuron scores [intermediate]) as float tensors."""
    import torch
    from edgecompress.families import family_of
    fam = family_of(model)
    groups = [head_neuron_groups(fam, layer) for layer in layers]
    params = [p for g in groups for k in ("head_out", "head_in", "ffn_out", "ffn_in") for p, _ in g[k]]
    scores = weight_scores(method, model, params, tokenizer, ctx, n_batches)
    by_param = {id(p): s for p, s in zip(params, scores)}
    out = []
    for layer, g in zip(layers, groups):
        n, d = fam.heads(layer)
        heads = torch.zeros(n)
        for p, blocks in g["head_out"]:
            # Summing the size-1 block dim is exact, so an unfused model scores bit-for-bit as before.
            heads += by_param[id(p)].reshape(blocks, n, d, -1).sum(0).sum(dim=(1, 2))
        w_in = g["head_in"][0][0]
        heads += by_param[id(w_in)].reshape(-1, n, d).sum(dim=(0, 2))
        inter = None
        for p, blocks in g["ffn_out"]:  # weight (blocks*I, H) and bias (blocks*I,)
            s = by_param[id(p)]
            s = s.reshape(blocks, -1, *s.shape[1:]).sum(0)
            s = s.sum(1) if s.ndim == 2 else s
            inter = s if inter is None else inter + s
        inter += by_param[id(g["ffn_in"][0][0])].sum(0)
        out.append((heads, inter))
    return out
