"""TorchScript-mobile (.ptl) exporter: torch.jit.trace + _save_for_lite_interpreter; int8 via eager quantize_dynamic.

Writes ONE file, model.ptl, plus io.json. Needs nothing beyond torch (no extra).

- The trace is shape-generic for HF BERT (sizes flow through aten::size, not constants); the tests check parity at
  batch/seq other than the trace shape because a trace that baked a shape in would still pass at that shape.
- `optimize_for_mobile` needs a torch built with XNNPACK; the CPU wheels for x86_64 are not, and it raises
  "XNNPACK is not enabled". We skip it then and say so in notes/details: the file is valid, just unfused.
- int8: `torch.ao.quantization.quantize_dynamic` on Linear layers (weights int8, activations quantized at run time),
  applied to a deep copy before tracing. This deprecated eager API is the only int8 that survives into the lite
  interpreter (torchao/PT2E graphs do not trace into TorchScript). Embeddings stay fp32.
- Issue 5 intents: static activations are NOT possible here: eager static quantization needs QuantStub/DeQuantStub
  placed around every quantized region and FX graph mode cannot trace HF BERT's control flow, and neither
  result is what the lite interpreter was built to run fast; the exporter refuses with a one-line error. QAT:
  fake-quant fine-tuning in torch (quant/qat.py), then quantize_dynamic. Fallback: the most sensitive Linears are
  left out of quantize_dynamic's qconfig_spec (drop measured on the eager quantized model, same kernels).
  Codebook: the lite interpreter has no lookup-table weights, so the clustered weights are written dense fp32
  (noted). embeddings: true quantizes nn.Embedding with float_qparams_weight_only_qconfig (8-bit rows,
  quantized::embedding_byte, which the lite interpreter runs); None/False keep it fp32 (the spine's behaviour).
- The lite interpreter deprecation warning ("consider switching to ExecuTorch") is expected and silenced.
"""
from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from edgecompress.export.base import (ExportResult, Exporter, InferFn, IOSpec, check_inputs, file_mb, logits_module,
                                      read_io_beside, write_io)
from edgecompress.registry import EXPORTERS


def _is_xnnpack_missing(err: BaseException) -> bool:
    return "XNNPACK is not enabled" in str(err) or "USE_XNNPACK" in str(err)


@EXPORTERS.register("ptl")
class PtlExporter(Exporter):
    name = "ptl"
    suffix = ".ptl"
    runtime = "lite_interpreter"
    extra = ""  # torch itself

    def missing(self) -> Optional[str]:
        try:
            import torch.jit.mobile  # noqa: F401
        except ImportError as e:
            return f"TorchScript-mobile export needs torch ({e.name} missing): pip install -e ."
        return None

    def export(self, model, io: IOSpec, quant, calib: Optional[Iterable[dict[str, np.ndarray]]],
               out_dir: Path) -> ExportResult:
        import torch
        from edgecompress.errors import UserInputError
        from edgecompress.export.quant import prepare_torch

        if quant is not None and quant.activations == "static" and quant.weights == "linear":
            raise UserInputError("ptl cannot realize activations: static (eager static quantization needs QuantStubs "
                                 "around every region, FX mode cannot trace HF BERT); use activations: dynamic for "
                                 "ptl, or export static int8 as onnx/pte")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"model{self.suffix}"
        ex = io.example_inputs(io.example_batch, io.example_seq_len)
        args = (torch.from_numpy(ex["input_ids"]), torch.from_numpy(ex["attention_mask"]))
        details: dict = {"precision": "fp32" if quant is None else "int8", "max_seq_len": io.max_seq_len,
                         "trace_shape": [io.example_batch, io.example_seq_len]}
        t0 = time.perf_counter()
        fp32_model = model
        model, notes, qdetails = prepare_torch(model, quant, calib, embeddings_default=False)
        details.update(qdetails)
        if quant is not None and quant.weights == "codebook":
            notes.append(f"codebook {quant.codebook_bits}-bit expanded to dense fp32 weights: the lite interpreter "
                         f"has no lookup-table weight kernel; accuracy is the codebook's, file size is fp32's")
            details["precision"] = f"codebook{quant.codebook_bits}-dense-fp32"
        elif quant is not None:
            excluded: list[str] = []
            if quant.fallback is not None:
                res = self._fallback(fp32_model, model, quant, calib)
                excluded = res.excluded
                details["fallback"] = res.to_json()
            model = self._quantize(model, quant, excluded)
            notes.append(f"int8: torch quantize_dynamic on nn.Linear, qint8 weights "
                         f"({'per channel' if quant.per_channel else 'per tensor'}), activations dynamic; "
                         f"embeddings {'8-bit rows' if quant.embeddings else 'stay fp32'}"
                         + (f"; fp32 fallback for {len(excluded)} layer(s)" if excluded else ""))
            details.update(quantizer="torch.ao.quantization.quantize_dynamic", per_channel=quant.per_channel,
                           embeddings_int8=bool(quant.embeddings))
        with torch.no_grad(), warnings.catch_warnings():
            # TracerWarning on HF's `torch.tensor(1.0) - mask` constant: harmless, it is a true constant.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            traced = torch.jit.trace(logits_module(model), args, strict=False)
        try:
            from torch.utils.mobile_optimizer import optimize_for_mobile
            traced = optimize_for_mobile(traced)
            details["optimize_for_mobile"] = True
        except RuntimeError as e:
            if not _is_xnnpack_missing(e):
                raise
            details["optimize_for_mobile"] = False
            notes.append("optimize_for_mobile skipped: this torch build has no XNNPACK (XNNPACK is not enabled)")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*Lite Interpreter is deprecated.*")
            traced._save_for_lite_interpreter(str(out))
        details.update(export_s=round(time.perf_counter() - t0, 2), file_mb=file_mb(out))
        write_io(io, out_dir)
        return ExportResult(file=out, notes=notes, details=details)

    def _fallback(self, fp32_model, model, quant, calib):
        import torch
        from edgecompress.compress.train import to_torch
        from edgecompress.export.quant import labelled
        from edgecompress.export.quant.fallback import choose, reference, sensitivity

        fb = quant.fallback
        inputs, labels, base = reference(fp32_model, labelled(calib, fb.samples))
        ranking = sensitivity(model, inputs[:4] if fb.metric == "sqnr" else inputs, fb.metric,
                              labels if fb.metric == "accuracy" else None, per_channel=quant.per_channel)

        def drop(excluded: list[str]) -> float:
            q = self._quantize(model, quant, excluded)
            with torch.no_grad():
                preds = np.concatenate([q(**to_torch(x)).logits.argmax(-1).numpy() for x in inputs])
            return base - float(np.mean(preds == labels))

        return choose(ranking, drop, fb.max_accuracy_drop, fb.max_layers)

    @staticmethod
    def _quantize(model, quant, excluded: Optional[list[str]] = None):
        import torch
        from torch.ao.quantization import (default_dynamic_qconfig, float_qparams_weight_only_qconfig,
                                           per_channel_dynamic_qconfig)

        qconfig = per_channel_dynamic_qconfig if quant.per_channel else default_dynamic_qconfig
        if excluded:
            spec: dict = {n: qconfig for n, m in model.named_modules()
                          if isinstance(m, torch.nn.Linear) and n not in excluded}
        else:
            spec = {torch.nn.Linear: qconfig}
        if quant.embeddings:
            emb = model.get_input_embeddings()
            spec[next(n for n, m in model.named_modules() if m is emb)] = float_qparams_weight_only_qconfig
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=UserWarning)
            # deepcopy: never mutate the caller's model (quantize_dynamic swaps modules in place otherwise).
            return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8)

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
