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

from edgecompress import progress
from edgecompress.compress.base import StageContext

CALIBRATION_BATCH = 16  # rows per calibration batch; the backward pass needs gradients, so smaller than EVAL_BATCH


def calibration_batches(tokenizer, ctx: StageContext, n_batches: int, batch_size: int = CALIBRATION_BATCH) -> list:
    return ctx.batches(tokenizer, "train", batch_size, shuffle=True, subset=n_batches * batch_size)[:n_batches]


def taylor_scores(model, params: list, batches: list) -> list:
    """|w * dL/dw| per parameter, summed over `batches` ((inputs, labels, row_index) tuples)."""
    import torch
    scores = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    was_training = model.training
    model.eval()  # no dropout: the scores rank weights of the model as it will run
    for inputs, labels, _ in progress.track(batches, description="importance (taylor)"):
        model.zero_grad(set_to_none=True)
        out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}, labels=torch.from_numpy(labels))
        out.loss.backward()
        with torch.no_grad():
            for s, p in zip(scores, params):
                if p.grad is not None:
                    s += (p.detach() * p.grad).abs()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return scores


def magnitude_scores(params: list) -> list:
    return [p.detach().abs().float() for p in params]


def weight_scores(method: str, model, params: list, tokenizer, ctx: StageContext, n_batches: int) -> list:
    """One float tensor per parameter, shaped like it: "taylor" over n_batches calibration batches, else |w|."""
    if method == "taylor":
        return taylor_scores(model, params, calibration_batches(tokenizer, ctx, n_batches))
    return magnitude_scores(params)


def head_neuron_groups(layer) -> dict:
    """The parameters of a BERT layer whose slices belong to one head / one FFN neuron, by the dim they are sliced on."""
    sa, ao = layer.attention.self, layer.attention.output
    return {"head_out": [sa.query.weight, sa.query.bias, sa.key.weight, sa.key.bias, sa.value.weight, sa.value.bias],
            "head_in": [ao.dense.weight],
            "ffn_out": [layer.intermediate.dense.weight, layer.intermediate.dense.bias],
            "ffn_in": [layer.output.dense.weight]}


def head_neuron_scores(model, layers: list, method: str, tokenizer, ctx: StageContext, n_batches: int) -> list:
    """Per layer: (head scores [n_heads], neuron scores [intermediate]) as float tensors."""
    import torch
    groups = [head_neuron_groups(layer) for layer in layers]
    params = [p for g in groups for k in ("head_out", "head_in", "ffn_out", "ffn_in") for p in g[k]]
    scores = weight_scores(method, model, params, tokenizer, ctx, n_batches)
    by_param = {id(p): s for p, s in zip(params, scores)}
    out = []
    for layer, g in zip(layers, groups):
        n, d = layer.attention.self.num_attention_heads, layer.attention.self.attention_head_size
        heads = torch.zeros(n)
        for p in g["head_out"]:
            heads += by_param[id(p)].reshape(n, d, -1).sum(dim=(1, 2))
        heads += by_param[id(g["head_in"][0])].reshape(-1, n, d).sum(dim=(0, 2))
        inter = by_param[id(g["ffn_out"][0])].sum(1) + by_param[id(g["ffn_out"][1])]
        inter += by_param[id(g["ffn_in"][0])].sum(0)
        out.append((heads, inter))
    return out
