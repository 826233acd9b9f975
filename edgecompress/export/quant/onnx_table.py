"""The word-embedding table of an .onnx file at 4 bits: its Gather becomes onnxruntime's contrib op
GatherBlockQuantized (domain com.microsoft, CPU EP), which looks rows up in a uint4 table and dequantizes only those.

Grid: asymmetric uint4 [0, 15] with an integer zero point, one scale + zero point per block of a row
(quantize.embedding_group_size; the op wants a power-of-2 block >= 16 along the quantized axis). quantize_dynamic has no 4-bit Gather, so the table's
Gather is kept out of it and rewritten here, on the quantized file.
"""
from __future__ import annotations

import numpy as np

from edgecompress.export.quant.table import table_entry

DOMAIN = "com.microsoft"
OP = "com.microsoft::GatherBlockQuantized"
FALLBACK_BLOCK = 16  # where the recipe's group does not divide the row: the op's smallest block


def word_gather(proto, vocab_size: int):
    """The Gather node reading the [vocab_size, dim] word table from an initializer (None if there is none)."""
    inits = {i.name: i for i in proto.graph.initializer}
    for n in proto.graph.node:
        init = inits.get(n.input[0]) if n.op_type == "Gather" else None
        if init is not None and len(init.dims) == 2 and init.dims[0] == vocab_size:
            return n
    return None


def quantize_uint4(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q uint8 values in [0, 15] [rows, dim], scales [rows, dim/block], zero points [rows, dim/block])."""
    rows, dim = w.shape
    g = w.reshape(rows, dim // block, block).astype(np.float32)
    lo, hi = np.minimum(g.min(axis=2), 0.0), np.maximum(g.max(axis=2), 0.0)  # 0 on the grid: zero rows stay zero
    scale = np.maximum((hi - lo) / 15.0, 1e-8).astype(np.float32)
    zero = np.clip(np.round(-lo / scale), 0, 15)
    q = np.clip(np.round(g / scale[..., None] + zero[..., None]), 0, 15).astype(np.uint8).reshape(rows, dim)
    return q, scale, zero.astype(np.uint8)


def _packed(values: np.ndarray) -> bytes:
    """ONNX's 4-bit layout, two values per byte, the first in the low nibble. Raw bytes: make_tensor's non-raw path
    keeps each packed byte in an int32 field, 4x the size on disk."""
    flat = values.astype(np.uint8).ravel()
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).tobytes()


def to_gather_block_quantized(proto, vocab_size: int, block: int) -> dict:
    """Rewrite, in place, the word table's Gather as a 4-bit GatherBlockQuantized with `block` values per scale
    (quantize.embedding_group_size, as in the .pte and .ptl tables); returns the details entry."""
    from onnx import TensorProto, helper, numpy_helper

    node = word_gather(proto, vocab_size)
    if node is None:
        raise ValueError(f"no Gather over a [{vocab_size}, dim] initializer: cannot find the word-embedding table")
    init = next(i for i in proto.graph.initializer if i.name == node.input[0])
    w = numpy_helper.to_array(init)
    rows, dim = w.shape
    block = next((b for b in (block, FALLBACK_BLOCK) if dim % b == 0), None)
    if block is None:
        raise ValueError(f"GatherBlockQuantized needs the table's width {dim} to be a multiple of 16")
    q, scale, zero = quantize_uint4(w, block)
    name = init.name
    proto.graph.initializer.remove(init)
    proto.graph.initializer.extend([
        helper.make_tensor(f"{name}_uint4", TensorProto.UINT4, [rows, dim], _packed(q), raw=True),
        numpy_helper.from_array(scale, f"{name}_scales"),
        helper.make_tensor(f"{name}_zero_points", TensorProto.UINT4, list(zero.shape), _packed(zero), raw=True)])
    new = helper.make_node("GatherBlockQuantized", [f"{name}_uint4", node.input[1], f"{name}_scales",
                                                    f"{name}_zero_points"], list(node.output), name=node.name,
                           domain=DOMAIN, bits=4, block_size=block, gather_axis=0, quantize_axis=1)
    at = list(proto.graph.node).index(node)
    proto.graph.node.remove(node)
    proto.graph.node.insert(at, new)
    if not any(o.domain == DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    # A block's qparams: a float32 scale and a 4-bit zero point (half a byte).
    return table_entry(rows, dim, 4, op=OP, group_size=block, qparam_bytes=4.5,
                       scheme=f"per {block}-value group asymmetric (float scale + uint4 zero point)")
