"""Does the exported file compute what the torch model computes, and how accurate is it on labelled data?

`compare` checks logits against the fp32 torch model at shapes that are NOT the export shape on purpose (a graph
that baked in its trace shape still matches at that shape; pytorch#110347). fp32 files are judged by
max_abs_diff (atol), quantized ones by SQNR / cosine / label agreement. Everything but the reference forward is numpy.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from edgecompress.export.iospec import InferFn, IOSpec

DEFAULT_SHAPES: tuple[tuple[int, int], ...] = ((1, 17), (3, 41))


def _torch_logits(model, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(inputs["input_ids"]),
                    attention_mask=torch.from_numpy(inputs["attention_mask"]), return_dict=False)[0]
    return out.float().numpy()


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """10*log10(|ref|^2 / |ref-test|^2): ~inf for identical, ~0 dB for zeros or noise of the signal's size."""
    ref = np.asarray(ref, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(test, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return float(10.0 * np.log10(signal / noise))


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-30)
    # Two all-zero rows are identical; one zero row against a non-zero one is maximally wrong (cos 0).
    return np.where((na == 0) & (nb == 0), 1.0, cos)


def compare(torch_model, infer_fn: InferFn, io: IOSpec, shapes: Sequence[tuple[int, int]] = DEFAULT_SHAPES,
            seed: int = 0) -> dict:
    """Logits of infer_fn vs the fp32 torch model on io.example_inputs at each (batch, seq) in shapes.

    Returns max_abs_diff, mean_abs_diff, cosine_min (worst row), sqnr_db (all rows together), label_agreement
    (fraction of rows with the same argmax), n_rows and shapes.
    """
    torch_model.eval()
    refs, outs = [], []
    for i, (b, s) in enumerate(shapes):
        inputs = io.example_inputs(b, s, seed=seed + i)
        ref = _torch_logits(torch_model, inputs)
        out = np.asarray(infer_fn(inputs), dtype=np.float32)
        if out.shape != ref.shape:
            raise ValueError(f"exported logits have shape {out.shape} at input ({b}, {s}); torch gives {ref.shape}")
        refs.append(ref)
        outs.append(out)
    ref, out = np.concatenate(refs), np.concatenate(outs)
    diff = np.abs(ref.astype(np.float64) - out)
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "cosine_min": float(_row_cosine(ref, out).min()),
        "sqnr_db": sqnr_db(ref, out),
        "label_agreement": float(np.mean(ref.argmax(axis=1) == out.argmax(axis=1))),
        "n_rows": int(ref.shape[0]),
        "shapes": [list(s) for s in shapes],
    }


def accuracy(infer_fn: InferFn, batches: Iterable[tuple[dict[str, np.ndarray], np.ndarray]]) -> dict:
    """Run infer_fn over (inputs, labels) batches; returns accuracy, n and the per-row predictions (int64)."""
    preds, labels = [], []
    for inputs, y in batches:
        preds.append(np.asarray(infer_fn(inputs)).argmax(axis=1).astype(np.int64))
        labels.append(np.asarray(y, dtype=np.int64).reshape(-1))
    if not preds:
        raise ValueError("accuracy() got no batches")
    p, y = np.concatenate(preds), np.concatenate(labels)
    if p.shape != y.shape:
        raise ValueError(f"{p.shape[0]} predictions for {y.shape[0]} labels")
    return {"accuracy": float(np.mean(p == y)), "n": int(y.shape[0]), "predictions": p}
