"""What embedding.dim's PCA alone costs, before any training: recall@10 of the packaged MiniLM's own ten nearest
held-out VADER test sentences when the same vectors are PCA-mapped to fewer dimensions (fitted on the train split).

The teacher's vectors (mean pooling + normalise, max_seq_len 128, 1 thread: ~2 minutes for 12,677 + 1,586 rows) are
cached in CACHE; the PCA rows are numpy SVD on them, uncentred (what embedding.dim ships, retrieval.pca_map) beside
centred (mean subtracted, then projected).

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/embeddings/pca_dims.py [CACHE=/tmp/edgecompress-pca]
    # writes pca_dims.json beside this file
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

DIMS = (256, 128, 64, 32)


def teacher_vectors(cache: Path, split_name: str) -> np.ndarray:
    f = cache / f"teacher_{split_name}.npy"
    if f.exists():
        return np.load(f)
    import torch
    from edgecompress import zoo
    from edgecompress.data import load_splits
    from edgecompress.embedding import load_embedder
    from edgecompress.modeling import load_tokenizer
    from edgecompress.pooling import Pooling
    from edgecompress.recipe import DataCfg
    from levers import embed  # this folder's teacher pass over a split (run as a script: its folder is on the path)
    torch.set_num_threads(1)
    d = zoo.minilm_dir()
    out = embed(load_embedder(d, Pooling("mean", True)), load_tokenizer(d), load_splits(DataCfg())[split_name])
    cache.mkdir(parents=True, exist_ok=True)
    np.save(f, out)
    return out


def main(cache: Path) -> dict:
    from edgecompress.retrieval import pca_map, recall_at_k
    train, test = teacher_vectors(cache, "train"), teacher_vectors(cache, "test")
    mean = train.mean(0, dtype=np.float64)
    _, _, centred = np.linalg.svd(train - mean, full_matrices=False)
    res = {"train_rows": len(train), "test_rows": len(test), "width": int(train.shape[1]),
           "uncentred": {}, "centred": {"384": recall_at_k((test - mean) @ centred.T, test, 10)}}
    for k in DIMS:
        res["uncentred"][str(k)] = recall_at_k(test @ pca_map(train, k).T, test, 10)
        res["centred"][str(k)] = recall_at_k((test - mean) @ centred[:k].T, test, 10)
    return res


if __name__ == "__main__":
    out = main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/edgecompress-pca"))
    (Path(__file__).parent / "pca_dims.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
