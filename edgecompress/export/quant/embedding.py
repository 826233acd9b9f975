"""8-bit word-embedding table for ExecuTorch: nn.Embedding -> rows of int8 + a float scale and zero point per row,
looked up by `quantized_decomposed::embedding_byte` (ExecuTorch's quantized-kernels library).

Why a source transform and not a PT2E quantizer: XNNPACK delegates no embedding lookup, and the PT2E
EmbeddingQuantizer's q/dq pair only becomes embedding_byte through a fusion pass that the XNNPACK lowering flow does
not run; a module that calls the op directly is what ExecuTorch's own LLM export does (llama `-E 8,0`,
QuantizedGroupEmbedding). The table is quantized once here, in torch; the .pte stores the int8 rows as a constant.

Asymmetric per row (min/max -> [-128, 127], float zero point), the same grid as torch's
float_qparams_weight_only_qconfig that the .ptl exporter uses: a row's values are not centred on 0, and a
symmetric grid would waste up to half of its 256 levels on the side a row does not reach.

The op is registered in torch by executorch.exir (its out-variant kernels in the runtime by
executorch.kernels.quantized, which the exporter's loader imports; the native runner links
libexecutorch_kernels_quantized).
"""
from __future__ import annotations

QMIN, QMAX = -128, 127
OP = "quantized_decomposed.embedding_byte"  # how the op appears in an edge graph's targets


def int8_embedding(emb):
    """A module replacing `emb` (nn.Embedding) whose forward runs embedding_byte on the 8-bit rows of its table."""
    import torch
    import executorch.exir.passes._quant_patterns_and_replacements  # noqa: F401 - defines the embedding_byte op

    class Int8Embedding(torch.nn.Module):
        def __init__(self, weight: torch.Tensor):
            super().__init__()
            w = weight.detach().float()
            lo = w.amin(dim=1).clamp(max=0.0)  # the grid includes 0, so a zero (padding) row stays exactly zero
            hi = w.amax(dim=1).clamp(min=0.0)
            scale = ((hi - lo) / (QMAX - QMIN)).clamp(min=1e-8)
            zero = (QMIN - lo / scale).round()
            q = (w / scale[:, None] + zero[:, None]).round().clamp(QMIN, QMAX).to(torch.int8)
            self.register_buffer("weight", q)
            self.register_buffer("scales", scale)
            self.register_buffer("zero_points", zero)

        def forward(self, indices):
            return torch.ops.quantized_decomposed.embedding_byte.default(
                self.weight, self.scales, self.zero_points, QMIN, QMAX, indices)

    return Int8Embedding(emb.weight).eval()


def quantize_word_embeddings(model) -> dict:
    """Swap, in place, the model's input (word) embedding for its 8-bit version. Position and token-type tables
    stay fp32: they are <2% of a BERT's embedding parameters. Returns what was done, for the export details."""
    emb = model.get_input_embeddings()
    model.set_input_embeddings(int8_embedding(emb))
    rows, dim = emb.weight.shape
    return {"rows": int(rows), "dim": int(dim), "bits": 8, "scheme": "per-row asymmetric (float scale + zero point)",
            "op": OP}
