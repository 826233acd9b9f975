"""ExecuTorch (.pte) exporter: torch.export with bounded dynamic shapes -> XNNPACK lowering; int8 via PT2E.

Writes ONE file, model.pte, plus io.json.

- Shapes: the sequence axis is dynamic in [1, io.max_seq_len] and the batch axis in [1, batch]. Both upper
  bounds are baked into the program: ExecuTorch plans activation memory for the largest shape up front, so
  the batch bound costs device memory even when the device runs batch 1 (MiniLM-size fp32, seq 128: ~3 MB planned
  at batch 1, ~24 MB at batch 8). Hence batch defaults to 1; pass `PteExporter(batch=N)` to bench batch N.
  The runtime rejects a larger shape with error 0x12; our InferFn checks seq first (UserInputError) and splits a
  batch larger than the bound into chunks, so host-side parity/accuracy work at any batch.
- int8: PT2E with executorch's XNNPACKQuantizer, symmetric, dynamic activations, per-channel weights when the
  intent asks; prepare/convert come from torchao (torch.ao.quantization.quantize_pt2e is gone). Dynamic quant
  has no activation ranges to learn, but observers still need one forward: calib batches, else io.example_inputs.
  Embeddings stay fp32; LayerNorm, where, any, expand run on portable kernels (not delegated): listed in details.
- Beyond dynamic, PT2E's XNNPACKQuantizer realizes the rest of the intent:
  static: `get_symmetric_quantization_config(is_dynamic=False)`, observers fed `calibration.samples` train rows,
  streamed `batch` rows per forward (minmax observers; percentile/entropy have no PT2E observer here, so they
  are refused in notes and minmax is used); QAT: fake-quant fine-tuning in torch first (quant/qat.py), then
  dynamic/static PT2E; fallback: the most sensitive Linears are left unannotated (`set_module_name(name, None)`),
  chosen by the drop of the converted (not yet lowered) program run in torch; codebook: XNNPACK has no
  lookup-table weights, so the clustered weights are written dense fp32 (noted); embeddings: the XNNPACK
  quantizer does not annotate embedding lookups (quantized embedding_byte needs the quantized-kernels library in
  the runtime), so the table stays fp32 (noted when asked). The profile's u8/s8 flavour is ONNX Runtime's knob:
  XNNPACK's quantizer is symmetric s8 weights / s8 activations by construction.
- Lowering is slow: measured on 2 x86 cores, 13-16 s for the 2-layer tiny test BERT; for a 3-layer MiniLM-size
  model (hidden 384, vocab 30522) 19 s fp32 / 25 s int8 at batch 1, 35 s int8 at batch 8.
- load() sets the XNNPACK threadpool size, which is process-global in the Python runtime.
"""
from __future__ import annotations

import itertools
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from edgecompress.errors import RuntimeFailure
from edgecompress.export.base import ExportJob, Exporter, InferFn, IOSpec, check_inputs, read_io_beside
from edgecompress.export.quant import fallback
from edgecompress.registry import EXPORTERS

_CALIB_BATCHES = 4  # dynamic quant learns nothing from data; a few forwards only exercise the observers


@contextmanager
def _tracing():
    import torch
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


@EXPORTERS.register("pte")
class PteExporter(Exporter):
    name = "pte"

    def dynamic_shapes(self, io: IOSpec):
        import torch

        seq = torch.export.Dim("seq", min=1, max=io.max_seq_len)
        # A Dim with min == max is rejected by torch.export; batch 1 is expressed as a static axis instead.
        dims = {1: seq} if self.batch == 1 else {0: torch.export.Dim("batch", min=1, max=self.batch), 1: seq}
        return {name: dict(dims) for name in io.input_names}

    def example_args(self, io: IOSpec) -> tuple:
        import torch
        ex = io.example_inputs(min(io.example_batch, self.batch), io.example_seq_len)
        return torch.from_numpy(ex["input_ids"]), torch.from_numpy(ex["attention_mask"])

    def describe(self, io: IOSpec, quant) -> tuple[list[str], dict]:
        notes, details = super().describe(io, quant)
        notes.append(f"shapes bounded: batch <= {self.batch}, seq <= {io.max_seq_len} (ExecuTorch plans memory "
                     f"for the bound; the runtime rejects larger inputs)")
        details.update(max_batch=self.batch, dynamic_batch=self.batch > 1, dynamic_seq=True, backend="xnnpack")
        return notes, details

    def quantize_module(self, job: ExportJob, module):
        quant = job.quant
        if quant.weights == "codebook":
            job.codebook_as_dense("XNNPACK")
            return module
        with _tracing():
            excluded: list[str] = []
            if quant.fallback is not None:
                res = fallback.run(job.fp32_model, job.model, quant, job.calib,
                                   lambda ex: self.program_infer(self.convert(module, job.io, quant, job.calib, ex, {}),
                                                                 job.io))
                excluded = res.excluded
                job.details["fallback"] = res.to_json()
            module = self.convert(module, job.io, quant, job.calib, excluded, job.details)
        job.notes.append(f"int8: PT2E XNNPACKQuantizer, symmetric int8 weights "
                         f"({'per channel' if quant.per_channel else 'per tensor'}), activations "
                         f"{quant.activations}" + (f" (calibrated on {job.details['calibration']['rows']} rows, "
                                                   f"minmax observers)" if quant.activations == "static" else "")
                         + "; embeddings stay fp32"
                         + (f"; fp32 fallback for {len(excluded)} layer(s)" if quant.fallback is not None else ""))
        if quant.embeddings:
            job.notes.append("embeddings: true cannot be realized in .pte: XNNPACKQuantizer does not annotate "
                             "embedding lookups; the table stays fp32")
        if quant.activations == "static" and quant.calibration.method != "minmax":
            job.notes.append(f"calibration method {quant.calibration.method} is onnxruntime's; PT2E XNNPACK "
                             f"static used its minmax observers")
        job.details.update(quantizer="XNNPACKQuantizer (PT2E, torchao prepare/convert)",
                           per_channel=quant.per_channel, activations=quant.activations,
                           quant_nodes=_count_quant_nodes(module))
        return module

    def convert(self, module, io: IOSpec, quant, calib, excluded: list[str], details: dict):
        """PT2E int8 of the logits module with the `excluded` Linears left fp32: the converted graph module."""
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
        exported = torch.export.export(module, self.example_args(io), dynamic_shapes=self.dynamic_shapes(io))
        prepared = prepare_pt2e(exported.module(), quantizer)
        if static:
            # Stream: one batch-bound slice at a time through the observers; nothing but their min/max is kept.
            rows = rebatch(input_batches(calib), quant.calibration.samples, self.batch, io.pad_token_id)
        else:  # dynamic quant learns nothing from data; a few forwards only exercise the observers
            rows = itertools.islice(input_batches(calib), _CALIB_BATCHES)
        n = 0
        for batch in rows:
            ids, mask = check_inputs(batch, io)
            for s in range(0, ids.shape[0], self.batch):  # the exported module enforces the batch bound
                prepared(torch.from_numpy(ids[s:s + self.batch]), torch.from_numpy(mask[s:s + self.batch]))
                n += min(self.batch, ids.shape[0] - s)
        if n == 0:
            if static:
                raise RuntimeFailure("static int8 needs calibration rows; the exporter got none (calib is empty)")
            prepared(*self.example_args(io))
        if static:
            details["calibration"] = {"rows": n, "method": "minmax (PT2E observers)"}
        return convert_pt2e(prepared)

    def program_infer(self, program, io: IOSpec) -> InferFn:
        """The converted (not yet lowered) program run in torch, q/dq ops and all, in chunks of the batch bound."""
        import torch

        def infer(inputs: dict[str, np.ndarray]) -> np.ndarray:
            ids, mask = check_inputs(inputs, io)
            with torch.no_grad():
                return np.concatenate([program(torch.from_numpy(ids[s:s + self.batch]),
                                               torch.from_numpy(mask[s:s + self.batch])).numpy()
                                       for s in range(0, ids.shape[0], self.batch)])

        return infer

    def lower(self, job: ExportJob, module):
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        t1 = time.perf_counter()
        with _tracing():
            try:
                ep = torch.export.export(module, self.example_args(job.io), dynamic_shapes=self.dynamic_shapes(job.io))
                edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
                # Read before to_executorch(), which rewrites the graph into out-variants and memory ops.
                delegated, portable = _op_split(edge.exported_program().graph_module)
                et = edge.to_executorch()
            except Exception as e:  # noqa: BLE001 - report any lowering failure as this export's failure
                raise RuntimeFailure(f"ExecuTorch export/lowering failed: {type(e).__name__}: {e}") from e
        t2 = time.perf_counter()
        job.details.update(quantize_s=round(t1 - job.started, 2), lower_s=round(t2 - t1, 2),
                           delegate_calls=delegated, non_delegated_ops=portable,
                           planned_memory_mb=round(sum(et.executorch_program.execution_plan[0].non_const_buffer_sizes)
                                                   / 2**20, 2))
        return et

    def write(self, job: ExportJob, program, out: Path) -> None:
        out.write_bytes(program.buffer)

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
