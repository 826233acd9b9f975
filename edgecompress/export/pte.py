"""ExecuTorch (.pte) exporter: torch.export with bounded dynamic shapes -> XNNPACK lowering; int8 via PT2E.

Writes ONE file, model.pte, plus io.json.

- Shapes: the sequence axis is dynamic in [1, io.max_seq_len] and the batch axis in [1, batch]. Both upper
  bounds are baked into the program: ExecuTorch plans activation memory for the largest shape up front, so
  the batch bound costs device memory even when the device runs batch 1 (MiniLM-size fp32, seq 128: ~3 MB planned
  at batch 1, ~24 MB at batch 8). Hence batch defaults to 1; pass `PteExporter(batch=N)` to bench batch N.
  The runtime rejects a larger shape with error 0x12; our InferFn checks seq first (UserInputError) and splits a
  batch larger than the bound into chunks, so host-side parity/accuracy work at any batch.
- What is lowered is an eager-attention copy of the model (`for_executorch`), fp32 and int8 alike. HF's SDPA
  attention decomposes, under torch.export, into the math path's `_safe_softmax` (eq -inf, any, logical_not,
  where over every [heads, seq, seq] score tensor) plus an expanded [seq, seq] mask built with where; XNNPACK
  delegates none of those, and on portable kernels they took 6 of the 10 ms of the default student's p50
  (benchmarks/ship). Eager attention is matmul + add of a [batch, 1, 1, seq] mask + softmax, all delegated; a
  fully padded row (not a real input) gets a uniform softmax instead of zeros. The no-op expand_copy that
  torch's matmul decomposition puts before each attention bmm is dropped before partitioning (`_drop_noop_expands`)
  so XNNPACK takes the reshape/bmm around it.
- int8: PT2E with executorch's XNNPACKQuantizer, symmetric, dynamic activations, per-channel weights when the
  intent asks; prepare/convert come from torchao (torch.ao.quantization.quantize_pt2e is gone). Dynamic quant
  has no activation ranges to learn, but observers still need one forward: calib batches, else io.example_inputs.
  The word-embedding table is stored as 8-bit rows (quant/embedding.py: quantized_decomposed::embedding_byte from
  ExecuTorch's quantized-kernels library; embedding_4bit with a scale per 32 values for `embedding_bits: 4`)
  unless the intent says `embeddings: false`: it is most of a small
  student's file (default student: 33.0 -> 10.9 MiB). The absolute-position table goes to 8-bit rows with it (an
  eighth of a trimmed-vocabulary student's file in fp32). LayerNorm and the lookups stay on portable kernels (not
  delegated): listed in details.
- Beyond dynamic, PT2E's XNNPACKQuantizer realizes the rest of the intent:
  static: `get_symmetric_quantization_config(is_dynamic=False)`, observers fed `calibration.samples` train rows,
  streamed `batch` rows per forward (minmax observers; percentile/entropy have no PT2E observer here, so they
  are refused in notes and minmax is used); QAT: fake-quant fine-tuning in torch first (quant/qat.py), then
  dynamic/static PT2E; fallback: the most sensitive Linears are left unannotated (`set_module_name(name, None)`),
  chosen by the drop of the converted (not yet lowered) program run in torch; codebook: XNNPACK has no
  lookup-table weights, so the clustered weights are written dense fp32 (noted), the table included. The
  profile's u8/s8 flavour is ONNX Runtime's knob: XNNPACK's quantizer is symmetric s8 weights / s8 activations by
  construction.
- Runtimes: a file with an 8- or 4-bit table needs the quantized kernels registered: load() imports
  executorch.kernels.quantized; the native runner links libexecutorch_kernels_quantized. details["kernel_ops"]
  lists every operator the file calls outside its XNNPACK delegate.
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
from edgecompress.export.base import (ExportJob, Exporter, exporter, InferFn, IOSpec, check_inputs, logits_module,
                                      read_io_beside)
from edgecompress.export.quant import fallback
from edgecompress.export.quant.embedding import quantize_position_embeddings, quantize_word_embeddings

_CALIB_BATCHES = 4  # dynamic quant learns nothing from data; a few forwards only exercise the observers


def _table_note(table: dict) -> str:
    op = table["op"].replace(".", "::")
    group = "" if table["group_size"] == table["dim"] else f", a scale per {table['group_size']} values"
    return f"; embeddings {table['bits']}-bit rows ({op}{group})"


@contextmanager
def _tracing():
    import torch
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


@exporter("pte")
class PteExporter(Exporter):
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

    def for_executorch(self, job: ExportJob, int8_table: bool):
        """The logits module that gets lowered: an eager-attention copy of job.model (module docstring: why), its
        word-embedding table as quantize.embedding_bits rows and its position table as 8-bit rows when int8_table.
        job.model is not modified."""
        model, attention = eager_attention_copy(job.model)
        job.details["attention"] = attention
        job.details["embeddings_int8"] = int8_table
        if int8_table:
            bits = job.quant.embedding_bits
            table = quantize_word_embeddings(model, bits, job.quant.embedding_group_size)
            job.details.update(embedding_bits=bits, embedding_table=table,
                               position_table=quantize_position_embeddings(model))
        return logits_module(model)

    def quantize_module(self, job: ExportJob, module):
        quant = job.quant
        if quant.weights == "codebook":
            job.codebook_as_dense("XNNPACK")
            return self.for_executorch(job, int8_table=False)  # dense fp32 anyway: the table stays fp32 too
        int8_table = quant.embeddings is not False  # unset means int8, as in the .onnx and .ptl files
        module = self.for_executorch(job, int8_table)
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
                         + (_table_note(job.details["embedding_table"]) if int8_table
                            else "; embeddings stay fp32 (embeddings: false)")
                         + (f"; fp32 fallback for {len(excluded)} layer(s)" if quant.fallback is not None else ""))
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
        quantizer = int_safe_quantizer(XNNPACKQuantizer).set_global(
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

        if job.quant is None:  # int8 built its module in quantize_module, before PT2E
            module = self.for_executorch(job, int8_table=False)
        t1 = time.perf_counter()
        with _tracing():
            try:
                ep = torch.export.export(module, self.example_args(job.io), dynamic_shapes=self.dynamic_shapes(job.io))
                edge = to_edge_transform_and_lower(ep, transform_passes=[_drop_noop_expands],
                                                   partitioner=[XnnpackPartitioner()])
                # Read before to_executorch(), which rewrites the graph into out-variants and memory ops.
                delegated, portable = _op_split(edge.exported_program().graph_module)
                et = edge.to_executorch()
            except Exception as e:  # noqa: BLE001 - report any lowering failure as this export's failure
                raise RuntimeFailure(f"ExecuTorch export/lowering failed: {type(e).__name__}: {e}") from e
        t2 = time.perf_counter()
        plan = et.executorch_program.execution_plan[0]
        job.details.update(quantize_s=round(t1 - job.started, 2), lower_s=round(t2 - t1, 2),
                           delegate_calls=delegated, non_delegated_ops=portable,
                           kernel_ops=sorted({f"{op.name}.{op.overload}" if op.overload else op.name
                                              for op in plan.operators}),
                           planned_memory_mb=round(sum(plan.non_const_buffer_sizes) / 2**20, 2))
        return et

    def write(self, job: ExportJob, program, out: Path) -> None:
        out.write_bytes(program.buffer)

    def load(self, path: Path, threads: int = 1) -> InferFn:
        """Load in the ExecuTorch runtime. NOTE: resizes the process-global XNNPACK threadpool to `threads`."""
        import torch
        import executorch.kernels.quantized  # noqa: F401 - registers embedding_byte/_4bit (the tables) here
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        path = Path(path)
        io = read_io_beside(path)
        # The Python runtime exposes no per-method thread setting; this is the shared XNNPACK/extension threadpool.
        # Resetting it pulls the pool from under every method loaded before (a later execute of those crashed the
        # process): only when the size must change.
        from edgecompress.logs import native_to_log
        with native_to_log():
            if portable_lib._threadpool_get_thread_count() != threads:
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


def eager_attention_copy(model) -> tuple[object, str]:
    """(a copy of the HF model (a classifier, an embedder) with eager attention, the attention it had). A HF model
    picks its attention classes when it is built, so the copy is rebuilt from the config and takes the weights
    (strict: every tensor must find its place); an eager model is deep-copied."""
    import copy

    had = getattr(model.config, "_attn_implementation", None) or "eager"
    if had == "eager":
        return copy.deepcopy(model).eval(), had
    # A copy of the config: from_config writes the attention choice into the config it is given. The model's own
    # class (what AutoModel*.from_config calls too), so a task's model (the embedder) stays that model.
    eager = type(model)._from_config(copy.deepcopy(model.config), attn_implementation="eager")
    eager.load_state_dict(model.state_dict())
    return eager.to(model.dtype).eval(), had


def _drop_noop_expands(gm):
    """Edge pass: remove expand_copy nodes whose output has their input's shape. torch's matmul decomposition puts
    one before each attention bmm; XNNPACK does not take expand, so each split a delegate and copied a tensor."""
    from executorch.exir.dialects._ops import ops as exir_ops
    from executorch.exir.pass_base import PassResult

    removed = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target == exir_ops.edge.aten.expand_copy.default:
            src, out = node.args[0].meta.get("val"), node.meta.get("val")
            # str(): symbolic sizes (the dynamic seq) compare as the same symbol, without a guard
            if src is not None and out is not None and [str(d) for d in src.shape] == [str(d) for d in out.shape]:
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
                removed += 1
    if removed:
        gm.graph.lint()
        gm.recompile()
    return PassResult(gm, removed > 0)


def _op_split(gm) -> tuple[int, list[str]]:
    """(number of XNNPACK delegate calls, sorted names of the ops left to portable kernels, such as
    aten.native_layer_norm.default)."""
    delegated, portable = 0, set()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(getattr(node.target, "__name__", node.target))
        if "executorch_call_delegate" in name:
            delegated += 1
        elif name not in ("getitem", "sym_size") and "sym_size" not in str(node.target):
            if callable(node.target) and type(node.target).__name__ == "builtin_function_or_method":
                portable.add(f"operator.{name}")  # size arithmetic on a dynamic dim (runtime prim op)
            else:
                portable.add(str(node.target).split(">")[0].removeprefix("<EdgeOpOverload: "))
    return delegated, sorted(portable)


def _count_quant_nodes(gm) -> int:
    """quantize/dequantize/choose_qparams nodes PT2E inserted: 0 means the quantizer annotated nothing."""
    return sum(1 for n in gm.graph.nodes if n.op == "call_function"
               and any(k in str(n.target) for k in ("quantize_per", "choose_qparams")))


def int_safe_quantizer(base):
    """`base` (XNNPACKQuantizer) without its float conversion of integer add/mul scalars.

    Its transform_for_annotation turns every scalar operand of add/mul into a float tensor, so integer index
    arithmetic comes out float (RoBERTa's position ids, DeBERTa's relative-position gather) and the prepared model
    fails at its first forward. Only floating-point add/mul get tensor scalars here; integer arithmetic is left as is."""
    import torch

    class IntSafeQuantizer(base):
        def transform_for_annotation(self, model):
            ops, k = (torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor), 0
            for n in list(model.graph.nodes):
                val = n.meta.get("val")
                if n.op != "call_function" or n.target not in ops or val is None or not val.dtype.is_floating_point:
                    continue
                args = []
                for a in n.args:
                    if isinstance(a, torch.fx.Node):
                        args.append(a)
                        continue
                    while hasattr(model, f"_float_scalar_{k}"):
                        k += 1
                    name, t = f"_float_scalar_{k}", torch.tensor(float(a))
                    model.register_buffer(name, t)
                    with model.graph.inserting_before(n):
                        node = model.graph.get_attr(name)
                    node.meta["val"] = val.fake_mode.from_tensor(t, static_shapes=True)
                    args.append(node)
                n.args = tuple(args)
            model.recompile()
            return model
    return IntSafeQuantizer()
