"""8- or 4-bit word-embedding table for ExecuTorch: nn.Embedding -> quantized rows + float scales and zero points,
looked up by `quantized_decomposed::embedding_byte` (8 bit) or `::embedding_4bit` (ExecuTorch's quantized-kernels
library).

Why a source transform and not a PT2E quantizer: XNNPACK delegates no embedding lookup, and the PT2E
EmbeddingQuantizer's q/dq pair only becomes embedding_byte through a fusion pass that the XNNPACK lowering flow does
not run; a module that calls the op directly is what ExecuTorch's own LLM export does (llama `-E 8,0` / `-E 4,32`,
QuantizedGroupEmbedding). The table is quantized once here, in torch; the .pte stores the rows as a constant.

Asymmetric (min/max -> [qmin, qmax], float zero point), the same grid as torch's float_qparams_weight_only_qconfig
that the .ptl exporter uses: a row's values are not centred on 0, and a symmetric grid would waste up to half of
its levels on the side a row does not reach. 8 bit: one scale per row. 4 bit: one scale per group of a row
(quantize.embedding_group_size, GROUP4 by default; 2-D scales, which embedding_4bit accepts): 16 levels over a whole
row lose more than a 32-value group does (MiniLM's rows, table SQNR: per row 19.2 dB, group 64 20.8, group 32 21.9;
a wider group buys rows where a table must fit a byte budget). The qparams stay fp32 (8 bytes per
group, 2 of the 6 bits a value costs): fp16 ones measured the same SQNR, but ExecuTorch's kernel wants the zero
points in the output's dtype and its AOT check wants them in the scales' dtype, so fp16 scales would mean no zero
points (symmetric: 20.6 dB).
embedding_4bit's packing: uint8 bytes, value 2i in the high nibble, 2i+1 in the low one, each stored as q + 8.

The ops are registered in torch by executorch.exir (their out-variant kernels in the runtime by
executorch.kernels.quantized, which the exporter's loader imports; the native runner links
libexecutorch_kernels_quantized, which has both).
"""
from __future__ import annotations

from edgecompress.export.quant.table import table_entry
from edgecompress.recipe import TABLE_GROUP as GROUP4

GRID = {8: (-128, 127), 4: (-8, 7)}
OPS = {8: "quantized_decomposed.embedding_byte", 4: "quantized_decomposed.embedding_4bit"}  # as in edge targets


def group_size(dim: int, bits: int, group: int = GROUP4) -> int:
    """Values per scale: the whole row at 8 bit; `group` at 4 bit when it divides the row."""
    return group if bits == 4 and dim % group == 0 else dim


def quantize_rows(weight, bits: int, group: int = GROUP4):
    """(stored rows, scales, zero points) of a [rows, dim] table on the `bits` grid, as the ExecuTorch ops read
    them: int8 rows + [rows] qparams at 8 bit; packed uint8 [rows, dim/2] + [rows, dim/group] qparams at 4 bit
    (`group` values per scale where it divides the row)."""
    import torch

    qmin, qmax = GRID[bits]
    rows, dim = weight.shape
    if bits == 4 and dim % 2:
        raise ValueError(f"embedding_bits 4 packs two values per byte: the table's width {dim} must be even")
    group = group_size(dim, bits, group)
    w = weight.detach().float().reshape(rows, dim // group, group)
    lo = w.amin(dim=2).clamp(max=0.0)  # the grid includes 0, so a zero (padding) row stays exactly zero
    hi = w.amax(dim=2).clamp(min=0.0)
    scale = ((hi - lo) / (qmax - qmin)).clamp(min=1e-8)
    zero = (qmin - lo / scale).round()
    q = (w / scale[..., None] + zero[..., None]).round().clamp(qmin, qmax).reshape(rows, dim)
    if bits == 8:
        return q.to(torch.int8), scale[:, 0].contiguous(), zero[:, 0].contiguous()
    u = (q + 8).to(torch.uint8)
    return (u[:, 0::2] << 4) | u[:, 1::2], scale.contiguous(), zero.contiguous()


def rows_entry(rows: int, dim: int, bits: int, op: str, group: int = GROUP4) -> dict:
    """The details entry of a table quantize_rows stored (the .pte's and the .ptl's: the same grid and groups)."""
    group = group_size(dim, bits, group)
    scheme = ("per-row" if group == dim else f"per {group}-value group") + " asymmetric (float scale + zero point)"
    return table_entry(rows, dim, bits, op=op, scheme=scheme, group_size=group)


def _store_rows(module, weight, bits: int, group: int) -> None:
    """Register quantize_rows' stored rows, scales and zero points as the module's buffers."""
    stored, scales, zero_points = quantize_rows(weight, bits, group)
    module.register_buffer("weight", stored)
    module.register_buffer("scales", scales)
    module.register_buffer("zero_points", zero_points)


def quantized_embedding(emb, bits: int = 8, group: int = GROUP4):
    """A module replacing `emb` (nn.Embedding) whose forward runs the `bits` op on the quantized rows of its table."""
    import torch
    import executorch.exir.passes._quant_patterns_and_replacements  # noqa: F401 - defines the embedding ops

    qmin, qmax = GRID[bits]
    op = torch.ops.quantized_decomposed.embedding_byte if bits == 8 else torch.ops.quantized_decomposed.embedding_4bit

    class QuantizedEmbedding(torch.nn.Module):
        def __init__(self, weight: torch.Tensor):
            super().__init__()
            _store_rows(self, weight, bits, group)

        def forward(self, indices):
            return op.default(self.weight, self.scales, self.zero_points, qmin, qmax, indices)

    return QuantizedEmbedding(emb.weight).eval()


def unpacked_4bit_embedding(emb, group: int = GROUP4):
    """The 4-bit table as plain torch ops for the lite interpreter: gather the packed rows, then split the nibbles
    and dequantize only those. Why not quantized::embedding_4bit: torch 2.13's lite interpreter cannot load the
    quint4x2 tensor its packed params serialize (storage size checked at 1 byte per value: 'require a storage of
    at least 35200 bytes, but storage only has 17600'). Same grid and groups as the .pte file."""
    import torch

    dim = emb.weight.shape[1]
    group = group_size(dim, 4, group)

    class Unpacked4bitEmbedding(torch.nn.Module):
        def __init__(self, weight: torch.Tensor):
            super().__init__()
            _store_rows(self, weight, 4, group)

        def forward(self, indices):
            flat = indices.reshape(-1)
            packed = self.weight.index_select(0, flat)
            q = torch.stack((packed >> 4, packed & 15), dim=-1).reshape(flat.shape[0], dim // group, group)
            deq = (q.float() - 8.0 - self.zero_points.index_select(0, flat)[..., None]) \
                * self.scales.index_select(0, flat)[..., None]
            return deq.reshape(indices.size(0), indices.size(1), dim)  # [batch, seq] ids, as the exporters trace

    return Unpacked4bitEmbedding(emb.weight).eval()


def quantize_word_embeddings(model, bits: int = 8, group: int = GROUP4) -> dict:
    """Swap, in place, the model's input (word) embedding for its `bits` version (the position table:
    quantize_position_embeddings; the token-type table, 2 rows, stays fp32). Returns what was done, for the export
    details."""
    emb = model.get_input_embeddings()
    model.set_input_embeddings(quantized_embedding(emb, bits, group))
    rows, dim = emb.weight.shape
    return rows_entry(rows, dim, bits, OPS[bits], group)


def quantize_position_embeddings(model) -> dict | None:
    """Swap, in place, the absolute-position table (where the family has one) for 8-bit rows. It is small beside
    a full vocabulary but not beside a trimmed one: 512 x 256 fp32 is 0.5 MiB, an eighth of the default student's
    .pte. 8 bit, not the word table's 4: every input reads every row up to its length. None: no table."""
    import torch
    from edgecompress.families import attr, family_of

    path = family_of(model).position_embeddings
    if path is None:
        return None
    parent_path, _, name = path.rpartition(".")
    parent = attr(model.base_model, parent_path) if parent_path else model.base_model
    emb = getattr(parent, name, None)
    if not isinstance(emb, torch.nn.Embedding):  # e.g. DeBERTa-v2 without position_biased_input: no table
        return None
    setattr(parent, name, quantized_embedding(emb, 8))
    rows, dim = emb.weight.shape
    return {"rows": int(rows), "dim": int(dim), "bits": 8, "op": OPS[8]}
