"""TorchScript-mobile (.ptl) exporter: torch.jit.trace + _save_for_lite_interpreter; int8 via eager quantize_dynamic.

Writes ONE file, model.ptl, plus io.json. Needs nothing beyond torch (no extra).

- The trace is shape-generic for HF BERT (sizes flow through aten::size, not constants); the tests check parity at
  batch/seq other than the trace shape because a trace that baked a shape in would still pass at that shape.
- `optimize_for_mobile` needs a torch built with XNNPACK; the CPU wheels for x86_64 are not, and it raises
  "XNNPACK is not enabled". We skip it then and say so in notes/details: the file is valid, just unfused.
- int8: `torch.ao.quantization.quantize_dynamic` on Linear layers (weights int8, activations quantized at run time),
  applied to a deep copy before tracing. This deprecated eager API is the only int8 that survives into the lite
  interpreter (torchao/PT2E graphs do not trace into TorchScript).
- The rest of the intent: static activations are refused (edgecompress/formats.py says why). QAT: fake-quant
  fine-tuning in torch (quant/qat.py), then quantize_dynamic. Fallback: the most sensitive Linears are left out of
  quantize_dynamic's qconfig_spec (drop measured on the eager quantized model, same kernels). Codebook: the lite
  interpreter has no lookup-table weights, so the clustered weights are written dense fp32 (noted).
  Embeddings: the word-embedding table is quantized with float_qparams_weight_only_qconfig (8-bit rows, a float
  scale and zero point per row; quantized::embedding_byte, which the lite interpreter runs) unless the intent says
  `embeddings: false`; `embedding_bits: 4` stores packed 4-bit rows with a scale per 32 values, looked up with
  plain ops (quant/embedding.py unpacked_4bit_embedding: why not quantized::embedding_4bit). It is most of a small
  student's file: default student 33.3 -> 11.1 MiB,
  same test accuracy (benchmarks/ship).
- The lite interpreter deprecation warning ("consider switching to ExecuTorch") is expected and silenced.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from edgecompress.export.base import ExportJob, Exporter, exporter, InferFn, IOSpec, check_inputs, logits_module, read_io_beside
from edgecompress.export.quant import fallback
from edgecompress.export.quant.embedding import rows_entry, unpacked_4bit_embedding

# How the lite interpreter looks each table width up (4 bit: quant/embedding.py unpacked_4bit_embedding says why
# not quantized::embedding_4bit).
EMB_OPS = {8: "quantized::embedding_byte", 4: "aten::index_select on packed uint8 rows + nibble unpack"}


def _is_xnnpack_missing(err: BaseException) -> bool:
    return "XNNPACK is not enabled" in str(err) or "USE_XNNPACK" in str(err)


@exporter("ptl")
class PtlExporter(Exporter):
    def describe(self, io: IOSpec, quant) -> tuple[list[str], dict]:
        notes, details = super().describe(io, quant)
        details["trace_shape"] = [io.example_batch, io.example_seq_len]
        return notes, details

    def quantize_module(self, job: ExportJob, module):
        quant = job.quant
        if quant.weights == "codebook":
            job.codebook_as_dense("the lite interpreter")
            return module
        excluded: list[str] = []
        if quant.fallback is not None:
            res = fallback.run(job.fp32_model, job.model, quant, job.calib,
                               lambda ex: torch_infer(quantize(job.model, quant, ex)))
            excluded = res.excluded
            job.details["fallback"] = res.to_json()
        table = int8_table(quant)
        bits = quant.embedding_bits
        emb = f"{bits}-bit rows ({EMB_OPS[bits]})" if table else "stay fp32 (embeddings: false)"
        job.notes.append(f"int8: torch quantize_dynamic on nn.Linear, qint8 weights "
                         f"({'per channel' if quant.per_channel else 'per tensor'}), activations dynamic; "
                         f"embeddings {emb}"
                         + (f"; fp32 fallback for {len(excluded)} layer(s)" if excluded else ""))
        job.details.update(quantizer="torch.ao.quantization.quantize_dynamic", per_channel=quant.per_channel,
                           embeddings_int8=table)
        if table:
            rows, dim = job.model.get_input_embeddings().weight.shape
            job.details.update(embedding_bits=bits, embedding_table=rows_entry(rows, dim, bits, EMB_OPS[bits],
                                                                               quant.embedding_group_size))
        return logits_module(quantize(job.model, quant, excluded))

    def lower(self, job: ExportJob, module):
        import torch

        ex = job.io.example_inputs(job.io.example_batch, job.io.example_seq_len)
        args = (torch.from_numpy(ex["input_ids"]), torch.from_numpy(ex["attention_mask"]))
        with torch.no_grad(), warnings.catch_warnings():
            # TracerWarning on HF's `torch.tensor(1.0) - mask` constant: harmless, it is a true constant.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            traced = torch.jit.trace(module, args, strict=False)
        try:
            from torch.utils.mobile_optimizer import optimize_for_mobile
            traced = optimize_for_mobile(traced)
            job.details["optimize_for_mobile"] = True
        except RuntimeError as e:
            if not _is_xnnpack_missing(e):
                raise
            job.details["optimize_for_mobile"] = False
            job.notes.append("optimize_for_mobile skipped: this torch build has no XNNPACK (XNNPACK is not enabled)")
        return traced

    def write(self, job: ExportJob, program, out: Path) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*Lite Interpreter is deprecated.*")
            program._save_for_lite_interpreter(str(out))

    def load(self, path: Path, threads: int = 1) -> InferFn:
        """Load in the lite interpreter. NOTE: sets torch's process-global intra-op thread count to `threads`
        (the lite interpreter has no per-module setting); callers that run eager torch afterwards should set it back.
        """
        import torch
        import torch.jit.mobile

        path = Path(path)
        io = read_io_beside(path)
        torch.set_num_threads(threads)
        module = torch.jit.mobile._load_for_lite_interpreter(str(path))

        def infer(inputs: dict[str, np.ndarray]) -> np.ndarray:
            ids, mask = check_inputs(inputs, io)
            with torch.no_grad():
                out = module(torch.from_numpy(ids), torch.from_numpy(mask))
            return out.numpy().astype(np.float32, copy=False)

        return infer


def int8_table(quant) -> bool:
    """Whether the word-embedding table becomes 8-bit rows: unless embeddings: false, as in the .onnx and .pte files."""
    return quant.embeddings is not False


def quantize(model, quant, excluded: Optional[list[str]] = None):
    """A quantize_dynamic copy of the HF model: every nn.Linear but `excluded` int8 (+ the embedding table as 8-bit
    rows unless embeddings: false). The caller's model is not modified."""
    import torch
    from torch.ao.quantization import (default_dynamic_qconfig, float_qparams_weight_only_qconfig,
                                       per_channel_dynamic_qconfig)

    qconfig = per_channel_dynamic_qconfig if quant.per_channel else default_dynamic_qconfig
    if excluded:
        spec: dict = {n: qconfig for n, m in model.named_modules()
                      if isinstance(m, torch.nn.Linear) and n not in excluded}
    else:
        spec = {torch.nn.Linear: qconfig}
    if int8_table(quant) and quant.embedding_bits == 8:
        emb = model.get_input_embeddings()
        spec[next(n for n, m in model.named_modules() if m is emb)] = float_qparams_weight_only_qconfig
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        # deepcopy: never mutate the caller's model (quantize_dynamic swaps modules in place otherwise).
        out = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8)
    if int8_table(quant) and quant.embedding_bits == 4:
        out.set_input_embeddings(unpacked_4bit_embedding(out.get_input_embeddings(), quant.embedding_group_size))
    return out


def torch_infer(model) -> InferFn:
    """An eager HF model as an InferFn (the fallback judges quantize_dynamic candidates this way: same kernels)."""
    import torch
    from edgecompress.compress.train import to_torch

    def infer(inputs: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return model(**to_torch(inputs)).logits.numpy()

    return infer
