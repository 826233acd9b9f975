"""Numpy-only judgements of sentence vectors: cosine to a reference, recall@k of a reference's nearest neighbours,
leave-one-out kNN accuracy of a label, ranking a corpus against a query, and what an index that stores the corpus
vectors in int8 or in bits still retrieves. Verify, the embedding task and `predict --rank` share them (no torch:
predict runs without it).
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


def vector_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """The share of rows whose vectors are at cosine >= AGREEING_COSINE."""
    return agreeing(row_cosine(a, b))


def agreeing(cosines: np.ndarray) -> float:
    """The share of row cosines (row_cosine's) at AGREEING_COSINE or more."""
    return float(np.mean(np.asarray(cosines) >= AGREEING_COSINE))


def neighbours(vectors: np.ndarray, k: int, corpus: np.ndarray | None = None) -> np.ndarray:
    """Each row's k nearest other rows by cosine (leave-one-out: a row is never its own neighbour), [n, k]. corpus:
    the same rows as the index stores them (queries stay `vectors`, as an app embeds a query at search time)."""
    u = unit(vectors)
    return _top(u @ unit(u if corpus is None else corpus).T, k)


def _top(sim: np.ndarray, k: int) -> np.ndarray:
    """[n, k] column ids of each row's k largest similarities, the diagonal (the row itself) left out. Overwrites
    sim's diagonal: callers pass a matrix they just computed."""
    sim = np.asarray(sim, dtype=np.float64)
    np.fill_diagonal(sim, -np.inf)
    k = min(k, len(sim) - 1)
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(sim, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def recall_at_k(student: np.ndarray, teacher: np.ndarray, k: int = 10) -> float:
    """Mean over rows of |student's k nearest ∩ teacher's k nearest| / k: how much of what the teacher would
    retrieve the student retrieves, when corpus and queries are both embedded by the student."""
    return overlap(neighbours(student, k), neighbours(teacher, k))


def overlap(found: np.ndarray, wanted: np.ndarray) -> float:
    """Mean over rows of the share of `wanted`'s ids among `found`'s ([n, k] each)."""
    hits = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(found, wanted)]
    return float(np.mean(hits) / found.shape[1])


# The index side: an app stores the corpus vectors once and embeds each query at search time. int8: one symmetric
# scale per dimension from the corpus's own largest value (4x fewer bytes than float32); binary: the sign bits (32x
# fewer), searched by Hamming distance, with the RESCORE x k candidates re-ranked by the float query against the int8
# vectors (the binary index in memory, the int8 one read only for the candidates: sentence-transformers' binary +
# scalar rescoring). The packaged MiniLM's own VADER test vectors as each index keeps them (recall@10 of its float
# neighbours): int8 0.995; bits rescored from 2 x k 0.690, 4 x k 0.838, 10 x k 0.948. 384 bits are few, so 10.
RESCORE = 10


def int8_corpus(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 [n, dim] values, float32 [dim] scales): the corpus as an int8 index stores it."""
    v = unit(vectors)
    scale = np.maximum(np.abs(v).max(axis=0), 1e-12) / 127.0
    return np.clip(np.round(v / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


def binary_corpus(vectors: np.ndarray) -> np.ndarray:
    """uint8 [n, ceil(dim / 8)]: one sign bit per dimension, as a binary index stores it."""
    return np.packbits(np.asarray(vectors) > 0, axis=1)


def index_recall(student: np.ndarray, teacher: np.ndarray, k: int = 10) -> dict:
    """recall@k of the teacher's neighbours when the student's corpus vectors are stored in int8, and in bits with
    rescoring, queries in float (leave-one-out, as recall_at_k); and the bytes a stored vector takes."""
    wanted = neighbours(teacher, k)
    q, scale = int8_corpus(student)
    deq = unit(q.astype(np.float32) * scale)  # scored by cosine, like the float vectors
    bits = binary_corpus(student)
    signs = np.unpackbits(bits, axis=1, count=student.shape[1]).astype(np.float32) * 2 - 1
    cands = _top(signs @ signs.T, min(RESCORE * k, len(student) - 1))  # Hamming order: dim - 2 * distance
    rescored = np.take_along_axis(cands, np.argsort(-np.einsum("nd,nkd->nk", unit(student), deq[cands]), axis=1)[:, :k],
                                  axis=1)
    return {f"index_int8_recall_at_{k}": overlap(neighbours(student, k, corpus=deq), wanted),
            f"index_binary_rescored_recall_at_{k}": overlap(rescored, wanted),
            "index_bytes_per_vector": {"float32": 4 * student.shape[1], "int8": int(q.shape[1]),
                                       "binary": int(bits.shape[1])}}


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
