"""ExecuTorch (.pte) exporter: torch.export with bounded dynamic shapes -> XNNPACK lowering; int8 via PT2E.

Writes ONE file, model.pte, plus io.json.

- Shapes: the sequence axis is dynamic in [1, io.max_seq_len] and the batch axis in [1, max_batch]. Both upper
  bounds are baked into the program: ExecuTorch plans activation memory for the largest shape up front, so
  max_batch costs device memory even when the device runs batch 1 (MiniLM-size fp32, seq 128: ~3 MB planned at
  batch 1, ~24 MB at batch 8). Hence max_batch defaults to 1; pass `PteExporter(max_batch=N)` to bench batch N.
  The runtime rejects a larger shape with error 0x12; our InferFn checks seq first (UserInputError) and splits a
  batch larger than max_batch into chunks, so host-side parity/accuracy work at any batch.
- int8: PT2E with executorch's XNNPACKQuantizer, symmetric, dynamic activations, per-channel weights when the
  intent asks; prepare/convert come from torchao (torch.ao.quantization.quantize_pt2e is gone). Dynamic quant
  has no activation ranges to learn, but observers still need one forward: calib batches, else io.example_inputs.
  Embeddings stay fp32; LayerNorm, where, any, expand run on portable kernels (not delegated): listed in details.
- Beyond dynamic (issue 5), PT2E's XNNPACKQuantizer realizes the rest of the intent:
  static: `get_symmetric_quantization_config(is_dynamic=False)`, observers fed `calibration.samples` train rows,
  streamed max_batch rows per forward (minmax observers; percentile/entropy have no PT2E observer here, so they
  are refused in notes and minmax is used); QAT: fake-quant fine-tuning in torch first (quant/qat.py), then
  dynamic/static PT2E; fallback: the most sensitive Linears are left unannotated (`set_module_name(name, None)`),
  chosen by the drop of the converted (not yet lowered) program run in torch; codebook: XNNPACK has no
  lookup-table weights, so the clustered weights are written dense fp32 (noted); embeddings: the XNNPACK
  quantizer does not annotate embedding lookups (quantized embedding_byte needs the quantized-kernels library in
  the runtime), so the table stays fp32 (noted when asked). The profile's u8/s8 flavour is ONNX Runtime's knob:
  XNNPACK's quantizer is symmetric s8 weights / s8 activations by construction.
- Lowering is slow: measured on 2 x86 cores, 13-16 s for the 2-layer tiny test BERT; for a 3-layer MiniLM-size
  model (hidden 384, vocab 30522) 19 s fp32 / 25 s int8 at max_batch 1, 35 s int8 at max_batch 8.
- load() sets the XNNPACK threadpool size, which is process-global in the Python runtime.
"""
from __future__ import annotations

import itertools
import time
import warnings
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from edgecompress.errors import RuntimeFailure
from edgecompress.export.base import (ExportResult, Exporter, InferFn, IOSpec, check_inputs, file_mb, logits_module,
                                      read_io_beside, write_io)
from edgecompress.registry import EXPORTERS

_CALIB_BATCHES = 4  # dynamic quant learns nothing from data; a few forwards only exercise the observers


@EXPORTERS.register("pte")
class PteExporter(Exporter):
    name = "pte"
    suffix = ".pte"
    runtime = "executorch"
    extra = "pte"

    def __init__(self, max_batch: int = 1):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.max_batch = max_batch

    def missing(self) -> Optional[str]:
        try:
            import executorch.exir  # noqa: F401
            import executorch.runtime  # noqa: F401
            import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: F401
        except ImportError as e:
            return f"ExecuTorch export needs executorch and torchao ({e.name} missing): pip install -e \".[pte]\""
        return None

    def _dynamic_shapes(self, io: IOSpec):
        import torch

        seq = torch.export.Dim("seq", min=1, max=io.max_seq_len)
        # A Dim with min == max is rejected by torch.export; batch 1 is expressed as a static axis instead.
        dims = {1: seq} if self.max_batch == 1 else {0: torch.export.Dim("batch", min=1, max=self.max_batch), 1: seq}
        return {name: dict(dims) for name in io.input_names}

    def export(self, model, io: IOSpec, quant, calib: Optional[Iterable[dict[str, np.ndarray]]],
               out_dir: Path) -> ExportResult:
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
        from edgecompress.export.quant import prepare_torch

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"model{self.suffix}"
        b = min(io.example_batch, self.max_batch)
        ex = io.example_inputs(b, io.example_seq_len)
        args = (torch.from_numpy(ex["input_ids"]), torch.from_numpy(ex["attention_mask"]))
        dyn = self._dynamic_shapes(io)
        notes = [f"shapes bounded: batch <= {self.max_batch}, seq <= {io.max_seq_len} (ExecuTorch plans memory "
                 f"for the bound; the runtime rejects larger inputs)"]
        details: dict = {"precision": "fp32" if quant is None else "int8", "max_seq_len": io.max_seq_len,
                         "max_batch": self.max_batch, "dynamic_batch": self.max_batch > 1, "dynamic_seq": True,
                         "backend": "xnnpack"}
        t0 = time.perf_counter()
        fp32_model = model
        model, qnotes, qdetails = prepare_torch(model, quant, calib, embeddings_default=False)
        notes += qnotes
        details.update(qdetails)
        mod = logits_module(model)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            if quant is not None and quant.weights == "codebook":
                notes.append(f"codebook {quant.codebook_bits}-bit expanded to dense fp32 weights: XNNPACK has no "
                             f"lookup-table weight kernel; accuracy is the codebook's, file size is fp32's")
                details["precision"] = f"codebook{quant.codebook_bits}-dense-fp32"
            elif quant is not None:
                mod = self._quantize(mod, args, dyn, io, quant, calib, fp32_model, details)
                notes.append(f"int8: PT2E XNNPACKQuantizer, symmetric int8 weights "
                             f"({'per channel' if quant.per_channel else 'per tensor'}), activations "
                             f"{quant.activations}" + (f" (calibrated on {details['calibration']['rows']} rows, "
                                                        f"minmax observers)" if quant.activations == "static" else "")
                             + "; embeddings stay fp32"
                             + (f"; fp32 fallback for {len(details['fallback']['excluded'])} layer(s)"
                                if "fallback" in details else ""))
                if quant.embeddings:
                    notes.append("embeddings: true cannot be realized in .pte: XNNPACKQuantizer does not annotate "
                                 "embedding lookups; the table stays fp32")
                if quant.activations == "static" and quant.calibration.method != "minmax":
                    notes.append(f"calibration method {quant.calibration.method} is onnxruntime's; PT2E XNNPACK "
                                 f"static used its minmax observers")
                details.update(quantizer="XNNPACKQuantizer (PT2E, torchao prepare/convert)",
                               per_channel=quant.per_channel, activations=quant.activations,
                               quant_nodes=_count_quant_nodes(mod))
            t1 = time.perf_counter()
            try:
                ep = torch.export.export(mod, args, dynamic_shapes=dyn)
                edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
                # Read before to_executorch(), which rewrites the graph into out-variants and memory ops.
                delegated, portable = _op_split(edge.exported_program().graph_module)
                et = edge.to_executorch()
            except Exception as e:  # noqa: BLE001 - report any lowering failure as this export's failure
                raise RuntimeFailure(f"ExecuTorch export/lowering failed: {type(e).__name__}: {e}") from e
        t2 = time.perf_counter()
        out.write_bytes(et.buffer)
        write_io(io, out_dir)
        details.update(quantize_s=round(t1 - t0, 2), lower_s=round(t2 - t1, 2), export_s=round(t2 - t0, 2),
                       file_mb=file_mb(out), delegate_calls=delegated, non_delegated_ops=portable,
                       planned_memory_mb=round(sum(et.executorch_program.execution_plan[0].non_const_buffer_sizes)
                                               / 2**20, 2))
        return ExportResult(file=out, notes=notes, details=details)

    def _quantize(self, mod, args, dyn, io: IOSpec, quant, calib, fp32_model=None, details: Optional[dict] = None):
        details = {} if details is None else details
        excluded: list[str] = []
        if quant.fallback is not None and fp32_model is not None:
            res = self._fallback(mod, args, dyn, io, quant, calib, fp32_model)
            excluded = res.excluded
            details["fallback"] = res.to_json()
        return self._convert(mod, args, dyn, io, quant, calib, excluded, details)

    def _convert(self, mod, args, dyn, io: IOSpec, quant, calib, excluded: list[str], details: dict):
        import torch
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                             get_symmetric_quantization_config)
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from edgecompress.export.quant.calibration import input_batches, rebatch

        static = quant.activations == "static"
        quantizer = XNNPACKQuantizer().set_global(
            get_symmetric_quantization_config(is_per_channel=quant.per_channel, is_dynamic=not static))
        for name in excluded:  # left unannotated -> stays fp32 (still delegated to XNNPACK as an fp32 linear)
            quantizer.set_module_name(f"inner.{name}", None)
        prepared = prepare_pt2e(torch.export.export(mod, args, dynamic_shapes=dyn).module(), quantizer)
        if static:
            # Stream: one max_batch slice at a time through the observers; nothing but their min/max is kept.
            rows = rebatch(input_batches(calib), quant.calibration.samples, self.max_batch, io.pad_token_id)
        else:  # dynamic quant learns nothing from data; a few forwards only exercise the observers
            rows = itertools.islice(input_batches(calib), _CALIB_BATCHES)
        n = 0
        for batch in rows:
            ids, mask = check_inputs(batch, io)
            for s in range(0, ids.shape[0], self.max_batch):  # the exported module enforces the batch bound
                prepared(torch.from_numpy(ids[s:s + self.max_batch]), torch.from_numpy(mask[s:s + self.max_batch]))
                n += min(self.max_batch, ids.shape[0] - s)
        if n == 0:
            if static:
                raise RuntimeFailure("static int8 needs calibration rows; the exporter got none (calib is empty)")
            ex = io.example_inputs(min(io.example_batch, self.max_batch), io.example_seq_len)
            prepared(torch.from_numpy(ex["input_ids"]), torch.from_numpy(ex["attention_mask"]))
        if static:
            details["calibration"] = {"rows": n, "method": "minmax (PT2E observers)"}
        return convert_pt2e(prepared)

    def _fallback(self, mod, args, dyn, io: IOSpec, quant, calib, fp32_model):
        import torch
        from edgecompress.export.quant import labelled
        from edgecompress.export.quant.fallback import choose, reference, sensitivity
        from edgecompress.export.quant.qat import linear_names

        fb = quant.fallback
        rows = labelled(calib, fb.samples)
        inputs, labels, base = reference(fp32_model, rows)
        model = mod.inner
        ranking = sensitivity(model, inputs[:4] if fb.metric == "sqnr" else inputs, fb.metric,
                              labels if fb.metric == "accuracy" else None, linear_names(model),
                              static=quant.activations == "static", per_channel=quant.per_channel)

        def drop(excluded: list[str]) -> float:
            conv = self._convert(mod, args, dyn, io, quant, calib, excluded, {})
            preds = []
            with torch.no_grad():
                for x in inputs:  # the converted program runs in torch (q/dq ops), before lowering
                    ids, mask = check_inputs(x, io)
                    for s in range(0, ids.shape[0], self.max_batch):
                        preds.append(conv(torch.from_numpy(ids[s:s + self.max_batch]),
                                          torch.from_numpy(mask[s:s + self.max_batch])).argmax(-1).numpy())
            return base - float(np.mean(np.concatenate(preds) == labels))

        return choose(ranking, drop, fb.max_accuracy_drop, fb.max_layers)

    def load(self, path: Path, threads: int = 1) -> InferFn:
        """Load in the ExecuTorch runtime. NOTE: resizes the process-global XNNPACK threadpool to `threads`."""
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        path = Path(path)
        io = read_io_beside(path)
        # The Python runtime exposes no per-method thread setting; this is the shared XNNPACK/extension threadpool.
        portable_lib._unsafe_reset_threadpool(threads)
        program = Runtime.get().load_program(path)
        method = program.load_method("forward")
        max_batch = int(program.metadata("forward").input_tensor_meta(0).sizes()[0])  # the exported upper bound

        def infer(inputs: dict[str, np.ndarray]) -> np.ndarray:
            ids, mask = check_inputs(inputs, io)
            outs = []
            for s in range(0, ids.shape[0], max_batch):
                res = method.execute([torch.from_numpy(ids[s:s + max_batch]), torch.from_numpy(mask[s:s + max_batch])])
                outs.append(res[0].numpy().astype(np.float32, copy=True))
            return np.concatenate(outs, axis=0)

        return infer


def _op_split(gm) -> tuple[int, list[str]]:
    """(number of XNNPACK delegate calls, sorted names of ops left to portable kernels)."""
    delegated, portable = 0, set()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(getattr(node.target, "__name__", node.target))
        if "executorch_call_delegate" in name:
            delegated += 1
        elif name not in ("getitem", "sym_size") and "sym_size" not in str(node.target):
            portable.add(str(node.target))
    return delegated, sorted(portable)


def _count_quant_nodes(gm) -> int:
    """quantize/dequantize/choose_qparams nodes PT2E inserted: 0 means the quantizer annotated nothing."""
    return sum(1 for n in gm.graph.nodes if n.op == "call_function"
               and any(k in str(n.target) for k in ("quantize_per", "choose_qparams")))
