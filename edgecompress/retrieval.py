"""Numpy-only judgements of sentence vectors: cosine to a reference, recall@k of a reference's nearest neighbours,
leave-one-out kNN accuracy of a label, and ranking a corpus against a query. Verify, the embedding task and
`predict --rank` share them (no torch: predict runs without it).
"""
from __future__ import annotations

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(unit(a) * unit(b), axis=1)


# A row's vector agrees with its torch model's at this cosine or more. A file is judged on the share of rows that
# agree (like a classifier's label agreement), not on its single worst row: the packaged MiniLM's own dynamic-int8
# ONNX (mean cosine 0.991, recall@10 0.85 of its neighbours) has a worst row at 0.954 of 1,586, and a .ptl student
# (mean 0.987) one at 0.970; a broken file (wrong kernel, sign flips, zeros) sits far below on most rows.
AGREEING_COSINE = 0.95


def vector_agreement(a: np.ndarray, b: np.ndarray, min_cosine: float = AGREEING_COSINE) -> float:
    """The share of rows whose vectors are at cosine >= min_cosine."""
    return float(np.mean(row_cosine(a, b) >= min_cosine))


def neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    """Each row's k nearest other rows by cosine (leave-one-out: a row is never its own neighbour), [n, k]."""
    u = unit(vectors)
    sim = u @ u.T
    np.fill_diagonal(sim, -np.inf)
    k = min(k, len(u) - 1)
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(sim, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def recall_at_k(student: np.ndarray, teacher: np.ndarray, k: int = 10) -> float:
    """Mean over rows of |student's k nearest ∩ teacher's k nearest| / k: how much of what the teacher would
    retrieve the student retrieves, when corpus and queries are both embedded by the student."""
    s, t = neighbours(student, k), neighbours(teacher, k)
    hits = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(s, t)]
    return float(np.mean(hits) / s.shape[1])


def knn_accuracy(vectors: np.ndarray, labels, k: int = 10) -> float:
    """Leave-one-out kNN: a row's label predicted by the majority of its k nearest rows (ties: the nearer side's
    similarity sum), compared with its own label."""
    labels = np.asarray(labels)
    _, ids = np.unique(labels, return_inverse=True)
    nb = neighbours(vectors, k)
    u = unit(vectors)
    sims = np.einsum("nd,nkd->nk", u, u[nb])
    votes = np.zeros((len(ids), int(ids.max()) + 1))
    for j in range(nb.shape[1]):
        np.add.at(votes, (np.arange(len(ids)), ids[nb[:, j]]), 1.0 + 1e-3 * sims[:, j])
    return float(np.mean(votes.argmax(axis=1) == ids))


def rank(query: np.ndarray, corpus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Corpus row indices by decreasing cosine to the one query vector, and those cosines."""
    sims = unit(corpus) @ unit(np.asarray(query).reshape(1, -1))[0]
    order = np.argsort(-sims, kind="stable")
    return order, sims[order]


def pca_map(vectors: np.ndarray, dim: int) -> np.ndarray:
    """[dim, width]: the top `dim` right singular vectors of the *uncentred* [rows, width] matrix, i.e. the
    dim-dimensional subspace that keeps the most of the vectors' dot products. Uncentred on purpose: subtracting the
    mean changes every cosine (MiniLM's unit vectors on VADER share a mean of norm 0.34), and measured on VADER's test
    split it kept fewer of the teacher's own neighbours (recall@10 at 128 dims: 0.77 uncentred, 0.68 centred; README)."""
    x = np.asarray(vectors, dtype=np.float64)
    if not 1 <= dim <= min(x.shape):
        raise ValueError(f"PCA to {dim} dims needs at least {dim} rows and {dim} columns, got {x.shape}")
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return vt[:dim].astype(np.float32)


def project(vectors: np.ndarray, weight: np.ndarray, normalize: bool) -> np.ndarray:
    """Vectors through a [dim, width] map (then L2-normalised when asked): what the embedder's projection does."""
    out = np.asarray(vectors, dtype=np.float32) @ np.asarray(weight, dtype=np.float32).T
    return unit(out).astype(np.float32) if normalize else out
