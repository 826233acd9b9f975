"""Non-linear weight quantization: a k-means codebook per layer (Deep Compression, Han et al. 2016).

Each Linear weight (and the word-embedding table when asked) is replaced by the nearest of 2**bits centroids
learnt on that tensor alone (1-D Lloyd iterations, linear init between min and max: Deep Compression found the
linear init keeps the rare large weights that matter most). The torch model stays fp32 with clustered values, so
every exporter can write it; what differs per format is whether the file can *store* it as a codebook:

- ONNX (`onnx_store_codebooks`): every initializer with <= 2**bits distinct values is stored as uint8 indices
  (two 4-bit indices per byte at 4 bits) + a float32 centroid table, decoded by BitShift/BitwiseAnd/Gather nodes.
  onnxruntime constant-folds that decode once at session start, so the file shrinks ~4x (8-bit) / ~8x (4-bit)
  while inference runs the usual fp32 kernels at fp32 speed and memory.
- .ptl / .pte: neither the lite interpreter nor ExecuTorch/XNNPACK has a lookup-table weight kernel, so the
  exporters write the clustered weights dense (fp32): the accuracy is the codebook's, the file size is fp32's,
  and ExportResult.notes says so.
"""
from __future__ import annotations

import copy

import numpy as np

MIN_ELEMENTS = 1024  # smaller tensors (biases, LayerNorm) are not worth a table + decode nodes


def kmeans_1d(values: np.ndarray, k: int, iters: int = 25, sample: int = 200_000, seed: int = 0) -> np.ndarray:
    """Sorted centroids (float32, len <= k) of a 1-D k-means over values. Fitted on a random sample when large."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size > sample:
        v = np.random.default_rng(seed).choice(v, size=sample, replace=False)
    uniq = np.unique(v)
    if uniq.size <= k:
        return uniq.astype(np.float32)
    c = np.linspace(v.min(), v.max(), k)
    for _ in range(iters):
        idx = assign(v, c)
        sums = np.bincount(idx, weights=v, minlength=k)
        counts = np.bincount(idx, minlength=k)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        if np.allclose(new, c, rtol=0, atol=1e-9):
            break
        c = np.sort(new)
    return c.astype(np.float32)


def assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (centroids sorted ascending)."""
    mids = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(mids, values).astype(np.int64)


def cluster_model(model, bits: int, embeddings: bool = False):
    """A deep copy of model with every nn.Linear weight (+ word embeddings when asked) snapped to its own codebook.

    Returns (model, report): report lists each clustered tensor with its centroid count and weight SQNR in dB."""
    import torch

    k = 2 ** bits
    out = copy.deepcopy(model).eval()
    targets = [(n, m) for n, m in out.named_modules() if isinstance(m, torch.nn.Linear)]
    if embeddings:
        emb = out.get_input_embeddings() if hasattr(out, "get_input_embeddings") else None
        if emb is not None:
            name = next(n for n, m in out.named_modules() if m is emb)
            targets.append((name, emb))
    report = []
    with torch.no_grad():
        for name, mod in targets:
            w = mod.weight.detach().cpu().numpy()
            if w.size < MIN_ELEMENTS:
                continue
            c = kmeans_1d(w, k)
            q = c[assign(w.ravel().astype(np.float64), c.astype(np.float64))].reshape(w.shape)
            mod.weight.copy_(torch.from_numpy(q))
            err = float(np.sum((w - q) ** 2))
            report.append({"layer": name, "centroids": int(c.size),
                           "weight_sqnr_db": round(float(10 * np.log10(np.sum(w ** 2) / max(err, 1e-30))), 2)})
    return out, report


def onnx_store_codebooks(model_proto, bits: int, min_elements: int = MIN_ELEMENTS) -> list[str]:
    """Rewrite, in place, every float32 initializer with <= 2**bits distinct values as indices + centroid table.

    8 bits: uint8 indices in the weight's shape -> Cast(int32) -> Gather(table).
    4 bits: two indices per byte (high nibble first) -> BitShift / BitwiseAnd -> Concat -> Reshape -> Gather.
    Returns the names of the rewritten initializers. Needs opset >= 18 (BitwiseAnd)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = 2 ** bits
    graph = model_proto.graph
    keep, decode, done = [], [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            keep.append(init)
            continue
        w = numpy_helper.to_array(init)
        table, idx = np.unique(w, return_inverse=True)
        if table.size > k:
            keep.append(init)
            continue
        name, shape = init.name, list(w.shape)
        t_name, i_name = f"{name}__codebook", f"{name}__indices"
        keep.append(numpy_helper.from_array(table.astype(np.float32), t_name))
        idx = idx.reshape(-1).astype(np.uint8)
        if bits == 8:
            keep.append(numpy_helper.from_array(idx.reshape(shape), i_name))
            decode += [helper.make_node("Cast", [i_name], [f"{name}__i32"], to=TensorProto.INT32),
                       helper.make_node("Gather", [t_name, f"{name}__i32"], [name], axis=0)]
        else:
            if idx.size % 2:
                idx = np.concatenate([idx, np.zeros(1, np.uint8)])
            packed = (idx[0::2] << 4) | idx[1::2]
            keep += [numpy_helper.from_array(packed, i_name),
                     numpy_helper.from_array(np.array([4], np.uint8).reshape(()), f"{name}__four"),
                     numpy_helper.from_array(np.array(15, np.uint8), f"{name}__mask"),
                     numpy_helper.from_array(np.array([-1], np.int64), f"{name}__ax"),
                     numpy_helper.from_array(np.array([-1], np.int64), f"{name}__flat"),
                     numpy_helper.from_array(np.array([int(np.prod(shape))], np.int64), f"{name}__n"),
                     numpy_helper.from_array(np.array([0], np.int64), f"{name}__zero"),
                     numpy_helper.from_array(np.array(shape, np.int64), f"{name}__shape")]
            decode += [helper.make_node("BitShift", [i_name, f"{name}__four"], [f"{name}__hi"], direction="RIGHT"),
                       helper.make_node("BitwiseAnd", [i_name, f"{name}__mask"], [f"{name}__lo"]),
                       helper.make_node("Unsqueeze", [f"{name}__hi", f"{name}__ax"], [f"{name}__hi2"]),
                       helper.make_node("Unsqueeze", [f"{name}__lo", f"{name}__ax"], [f"{name}__lo2"]),
                       helper.make_node("Concat", [f"{name}__hi2", f"{name}__lo2"], [f"{name}__pairs"], axis=-1),
                       helper.make_node("Reshape", [f"{name}__pairs", f"{name}__flat"], [f"{name}__all"]),
                       helper.make_node("Slice", [f"{name}__all", f"{name}__zero", f"{name}__n"], [f"{name}__cut"]),
                       helper.make_node("Reshape", [f"{name}__cut", f"{name}__shape"], [f"{name}__u8"]),
                       helper.make_node("Cast", [f"{name}__u8"], [f"{name}__i32"], to=TensorProto.INT32),
                       helper.make_node("Gather", [t_name, f"{name}__i32"], [name], axis=0)]
        done.append(name)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(decode + nodes)  # decode first: topological order holds (inputs are initializers only)
    onnx.checker.check_model(model_proto)
    return done
