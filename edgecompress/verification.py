"""Judging an exported file in the runtime that will run it.

Two places, on purpose apart:
- `write_expected` runs inside the export step: the reference logits every device run is checked against
  (expected.json), with a tolerance from this file's own drift vs the torch model.
- `verify_file` is the verify step, cached on its own with the export as its parent: parity against the torch
  model at shapes other than the export shape, accuracy on the test split, label agreement with torch. Changing
  how many rows are judged re-runs this step only, never the export.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgecompress import progress
from edgecompress.data import EVAL_BATCH, batches


def _torch_logits(model, inputs: dict) -> np.ndarray:
    import torch
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(inputs["input_ids"]),
                     attention_mask=torch.from_numpy(inputs["attention_mask"])).logits.float().numpy()


def write_expected(out_dir: Path, io, infer, model, batch: int, seed: int, exact: bool) -> dict:
    """expected.json: inputs (batch rows at the exported sequence bound, later rows padded) and this runtime's
    logits for them. A device may drift 4x as far from torch as this host's runtime does: int8 kernels differ by CPU
    (u8/s8, VNNI vs NEON). `exact` (fp32) also demands the same argmax per row."""
    inputs = io.example_inputs(batch, io.max_seq_len, seed=seed)
    logits = np.asarray(infer(inputs), dtype=np.float32)
    drift = float(np.abs(logits.astype(np.float64) - _torch_logits(model, inputs)).max())
    doc = {"inputs": {k: v.tolist() for k, v in inputs.items()}, "logits": logits.tolist(),
           "atol": max(1e-3, 4 * drift), "argmax_must_match": exact}
    (Path(out_dir) / "expected.json").write_text(json.dumps(doc))
    return {"expected_drift_vs_torch": drift, "expected_atol": doc["atol"]}


def evaluate(infer, tokenizer, split, max_seq_len: int, model=None) -> dict:
    """Accuracy of an exported file in its runtime on a split (+ per-domain, + label agreement with the torch model)."""
    preds = np.zeros(len(split), dtype=np.int64)
    ref = np.zeros(len(split), dtype=np.int64) if model is not None else None
    bs = batches(tokenizer, split, EVAL_BATCH, max_seq_len, shuffle=False)
    for inputs, _, idx in progress.track(bs, description="verify on test split"):
        preds[idx] = np.asarray(infer(inputs)).argmax(-1)
        if model is not None:
            ref[idx] = _torch_logits(model, inputs).argmax(-1)
    out = {"test_accuracy": float((preds == split.labels).mean()), "test_samples": len(split)}
    if ref is not None:
        out["test_label_agreement_vs_torch"] = float((preds == ref).mean())
    if split.label_names:  # recall per class, by name: where an int8 file loses accuracy is rarely uniform
        out["test_accuracy_by_class"] = {name: float((preds[split.labels == c] == c).mean())
                                         for c, name in enumerate(split.label_names) if (split.labels == c).any()}
    if split.domains:
        doms = np.array(split.domains)
        out["test_accuracy_by_domain"] = {d: float((preds[doms == d] == split.labels[doms == d]).mean())
                                          for d in sorted(set(split.domains))}
    return out


def verify_file(infer, io, model, tokenizer, test_split, *, shapes, seed: int, reference=None, target=None) -> dict:
    """The verify step's metrics: parity at `shapes` + accuracy on `test_split`, both in the file's runtime.
    reference, target: unused (the labels are what a classifier is judged against)."""
    from edgecompress.export import parity
    par = parity.compare(model, infer, io, shapes=shapes, seed=seed)
    return {"parity": par, **evaluate(infer, tokenizer, test_split, io.max_seq_len, model=model)}


def file_outputs(infer, tokenizer, split, max_seq_len: int, model=None) -> tuple[np.ndarray, np.ndarray | None]:
    """The file's outputs for every row of a split, in row order (+ the torch model's, when given)."""
    out = ref = None
    for inputs, _, idx in progress.track(batches(tokenizer, split, EVAL_BATCH, max_seq_len, shuffle=False),
                                         description="verify on test split"):
        got = np.asarray(infer(inputs), dtype=np.float32)
        out = np.zeros((len(split), got.shape[1]), np.float32) if out is None else out
        out[idx] = got
        if model is not None:
            ref = np.zeros_like(out) if ref is None else ref
            ref[idx] = _torch_logits(model, inputs)
    return out, ref


def verify_embedding_file(infer, io, model, tokenizer, test_split, *, shapes, seed: int, reference,
                          target=None) -> dict:
    """An embedding file judged in its runtime: parity (cosine) to the torch model at `shapes`, and on the held-out
    rows, against the teacher's vectors (reference(): [rows, teacher width], the same rows): recall@10 of the teacher's
    ten nearest neighbours among the file's ten (corpus and queries both embedded by the file) and leave-one-out
    kNN@10 accuracy of the label and the domain beside the teacher's own: both compare neighbour sets, so they hold at
    any width. recall@10 again with the file's corpus vectors stored as an int8 and as a binary (rescored) index. A
    cosine to the teacher needs equal widths: cosine_to_teacher_mean where the file keeps the teacher's width; with
    embedding.dim, cosine_to_pca_teacher_mean instead, against target() (the teacher's vectors through the
    fixed PCA map the student was distilled toward), never mixed under one key."""
    from edgecompress.export import parity
    from edgecompress.retrieval import agreeing, index_recall, knn_accuracy, recall_at_k, row_cosine
    par = parity.compare(model, infer, io, shapes=shapes, seed=seed)
    vecs, torch_vecs = file_outputs(infer, tokenizer, test_split, io.max_seq_len, model)
    teacher = np.asarray(reference(), dtype=np.float32)
    to_torch = row_cosine(vecs, torch_vecs)
    out = {"parity": par, "test_samples": len(test_split), "dim": int(vecs.shape[1]),
           "cosine_to_torch_mean": float(to_torch.mean()), "cosine_to_torch_min": float(to_torch.min()),
           "vector_agreement_vs_torch": agreeing(to_torch),
           "recall_at_10": recall_at_k(vecs, teacher, 10), **index_recall(vecs, teacher, 10)}
    if test_split.label_names:  # unlabelled text has no label to probe
        out["knn_label_accuracy"] = knn_accuracy(vecs, test_split.labels)
        out["teacher_knn_label_accuracy"] = knn_accuracy(teacher, test_split.labels)
    if teacher.shape[1] == vecs.shape[1]:
        out["cosine_to_teacher_mean"] = float(row_cosine(vecs, teacher).mean())
    elif target is not None:
        mapped = np.asarray(target(), dtype=np.float32)
        if mapped.shape[1] == vecs.shape[1]:
            out["cosine_to_pca_teacher_mean"] = float(row_cosine(vecs, mapped).mean())
    if test_split.domains:
        out["knn_domain_accuracy"] = knn_accuracy(vecs, test_split.domains)
        out["teacher_knn_domain_accuracy"] = knn_accuracy(teacher, test_split.domains)
    return out
