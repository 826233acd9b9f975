"""ONNX exporter: torch.onnx (dynamo) with dynamic batch and sequence axes; int8 via onnxruntime.quantization.

Writes ONE file, model.onnx (weights embedded, models < 2 GB), plus io.json. The dynamo exporter, the torch
2.13 default, saves weights as external data (.onnx + .onnx.data) by default; a device copy of only the .onnx
would then fail to load, so we save with external_data=False.

int8, all with onnxruntime.quantization on the fp32 graph (`quant_pre_process` is not used: it fails on symbolic
shapes and external-data files), in the int8 flavour the QuantSpec carries (from the device profile):
- dynamic: `quantize_dynamic`, weights int8 (per channel when asked; per-tensor measured cos 0.91 vs 0.98 on
  MiniLM), activations quantized at run time (MatMulInteger / DynamicQuantizeLinear). Gather (the embedding table)
  is quantized unless `embeddings: false` (None includes it too: `quantize_dynamic`'s own default);
  `embedding_bits: 4` keeps the word table's Gather out and rewrites it as GatherBlockQuantized (quant/onnx_table.py).
- static: `quantize_static`, QDQ format, ranges from calibration rows streamed through a CalibrationDataReader,
  `CalibStridedMinMax` stride batches at a time (quant/calibration.py), method MinMax / Percentile / Entropy. Only
  MatMul/Gemm with a weight initializer (+ Gather when embeddings) are quantized: activation x activation
  MatMuls (attention scores) stay fp32.
- codebook: weights clustered in torch (quant/codebook.py), stored in the file as uint8 indices + a centroid
  table decoded with Gather (4-bit: two indices per byte); runs in onnxruntime at fp32 speed, file ~4x/~8x smaller.
- QAT: fake-quant fine-tuning in torch first (quant/qat.py), then dynamic or static as above.
- fallback: layers ranked by sensitivity, the most sensitive left out of `nodes_to_quantize` until the drop
  measured in onnxruntime fits the budget (quant/fallback.py); listed in details["fallback"].
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from edgecompress.errors import RuntimeFailure
from edgecompress.export.base import ExportJob, Exporter, exporter, InferFn, IOSpec, check_inputs, read_io_beside, write_io
from edgecompress.export.quant import fallback, flavour_text
from edgecompress.export.quant.onnx_table import to_gather_block_quantized, word_gather
from edgecompress.export.quant.table import table_entry

OPSET = 18  # >= 17 has LayerNormalization as one op; 18 is what the dynamo exporter emits natively
# Upper bound for the exported batch axis. ONNX keeps it symbolic ("batch"), so this only bounds torch.export's
# shape reasoning; onnxruntime accepts any batch.
_MAX_BATCH = 4096


@exporter("onnx")
class OnnxExporter(Exporter):
    embeddings_default = True  # quantize_dynamic quantizes the Gather (embedding table) unless told otherwise

    def describe(self, io: IOSpec, quant) -> tuple[list[str], dict]:
        notes, details = super().describe(io, quant)
        details.update(opset=OPSET, exporter="torch.onnx dynamo", dynamic_axes={"batch": True, "seq": True})
        if quant is not None:
            details.update(per_channel=quant.per_channel, activations=quant.activations, weights=quant.weights,
                           activation_type=quant.activation_type, weight_type=quant.weight_type,
                           reduce_range=quant.reduce_range)
        return notes, details

    def lower(self, job: ExportJob, module) -> Path:
        # The fp32 graph keeps its per-node module scopes: the int8 paths read them (weight_matmuls); write() strips them.
        path = job.tmp / "fp32.onnx"
        export_fp32(module, job.io, path)
        return path

    def quantize_program(self, job: ExportJob, fp32: Path) -> Path:
        return self._codebook(job, fp32) if job.quant.weights == "codebook" else self._int8(job, fp32)

    def _codebook(self, job: ExportJob, fp32: Path) -> Path:
        import onnx
        from edgecompress.export.quant.codebook import onnx_store_codebooks

        quant = job.quant
        proto = onnx.load(str(fp32))
        stored = onnx_store_codebooks(proto, quant.codebook_bits)
        dest = job.tmp / "codebook.onnx"
        onnx.save(proto, str(dest), save_as_external_data=False)
        job.details["codebook"] = {"bits": quant.codebook_bits, "stored": len(stored), "storage": "uint8 indices + "
                                   "float32 table, Gather decode" + (" (2 per byte)" if quant.codebook_bits == 4 else "")}
        job.notes.append(f"codebook {quant.codebook_bits}-bit: {len(stored)} weight tensors stored as uint8 "
                         f"indices + centroid table (Gather decode); onnxruntime folds the decode at session "
                         f"start, so inference runs fp32 kernels")
        return dest

    def _int8(self, job: ExportJob, fp32: Path) -> Path:
        import onnx

        quant = job.quant
        proto = onnx.load(str(fp32), load_external_data=False)
        weight_nodes = weight_matmuls(proto)
        emb = quant.embeddings is not False
        job.details.update(embeddings_int8=emb, quantized_matmuls=len(weight_nodes))
        plan = calibration_plan(quant, job.calib) if quant.activations == "static" else None
        if plan is not None:
            job.details["calibration"] = plan
        excluded: list[str] = []
        if quant.fallback is not None:
            res = self._fallback(job, fp32, proto, weight_nodes, plan)
            excluded = [weight_nodes[n] for n in res.excluded]
            job.details["fallback"] = res.to_json()
        dest = job.tmp / "int8.onnx"
        table4 = emb and quant.embedding_bits == 4  # quantize_dynamic has no 4-bit Gather: kept out, rewritten after
        word = word_gather(proto, job.io.vocab_size) if table4 else None
        quantize_file(fp32, dest, quant, job.calib, job.io, proto, excluded, job.tmp, plan,
                      keep_fp32=[word.name] if word else [])
        if emb:
            self._record_table(job, dest, proto)
        how = "quantize_static QDQ, " + quant.calibration.method if plan is not None else "quantize_dynamic"
        job.notes.append(f"int8 {quant.activations}: onnxruntime {how}, {flavour_text(quant)}; embeddings "
                         + (("4-bit (GatherBlockQuantized)" if table4 else "int8") if emb else "fp32")
                         + (f"; fp32 fallback for {len(excluded)} layer(s)" if quant.fallback is not None else ""))
        return dest

    def _record_table(self, job: ExportJob, dest: Path, fp32_proto) -> None:
        """details: the word table as stored; at 4 bits, rewrite its Gather as GatherBlockQuantized first."""
        import onnx

        bits = job.quant.embedding_bits
        if bits == 4:
            proto = onnx.load(str(dest))
            table = to_gather_block_quantized(proto, job.io.vocab_size, job.quant.embedding_group_size)
            onnx.save(proto, str(dest), save_as_external_data=False)
        else:
            word = word_gather(fp32_proto, job.io.vocab_size)
            if word is None:
                return
            rows, dim = next(i.dims for i in fp32_proto.graph.initializer if i.name == word.input[0])
            # quantize_dynamic's Gather: an int8 table with one scale + zero point for the whole tensor.
            table = table_entry(rows, dim, 8, op="DequantizeLinear + Gather", group_size=dim, qparam_bytes=0,
                                scheme="per-tensor (scale + zero point)")
        job.details.update(embedding_bits=bits, embedding_table=table)

    def _fallback(self, job: ExportJob, fp32: Path, proto, weight_nodes: dict[str, str], plan: Optional[dict]):
        quant = job.quant
        # Only what this quantizer will touch: quantize_dynamic has no Gemm kernel (pooler/classifier stay fp32).
        op_of = {n.name: n.op_type for n in proto.graph.node}
        names = [n for n, node in weight_nodes.items() if quant.activations == "static" or op_of.get(node) == "MatMul"]
        write_io(job.io, job.tmp)  # load() reads the io.json beside the candidate

        def build(excluded: list[str]) -> InferFn:
            cand = job.tmp / "fallback.onnx"
            quantize_file(fp32, cand, quant, job.calib, job.io, proto, [weight_nodes[n] for n in excluded], job.tmp,
                          plan)
            return self.load(cand)

        return fallback.run(job.fp32_model, job.model, quant, job.calib, build, names)

    def write(self, job: ExportJob, program: Path, out: Path) -> None:
        import onnx

        # Re-save so the device file is one self-contained file whatever the quantizer chose to write.
        proto = onnx.load(str(program))
        strip_debug_metadata(proto)
        onnx.save(proto, str(out), save_as_external_data=False)

    def load(self, path: Path, threads: int = 1) -> InferFn:
        import onnxruntime as ort

        path = Path(path)
        io = read_io_beside(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]

        def infer(inputs: dict[str, np.ndarray]) -> np.ndarray:
            ids, mask = check_inputs(inputs, io)
            feed = {"input_ids": ids, "attention_mask": mask}
            return np.asarray(sess.run(None, {n: feed[n] for n in names})[0], dtype=np.float32)

        return infer


def export_fp32(module, io: IOSpec, path: Path) -> None:
    """torch.onnx (dynamo) export of a logits_module, batch and seq axes dynamic, as one file with its metadata."""
    import onnx
    import torch

    ex = io.example_inputs(io.example_batch, io.example_seq_len)
    args = (torch.from_numpy(ex["input_ids"]), torch.from_numpy(ex["attention_mask"]))
    batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
    seq = torch.export.Dim("seq", min=1, max=io.max_seq_len)
    dyn = {name: {0: batch, 1: seq} for name in io.input_names}
    with torch.no_grad(), warnings.catch_warnings():
        # "axis name batch will not be used, since it shares the same shape constraints": expected, both
        # inputs share the batch and seq Dims on purpose.
        warnings.filterwarnings("ignore", message=r".*axis name.*will not be used.*")
        # A temporary output name: the exporter names values after their ops (aten::embedding -> "embedding"), so
        # the wanted name may already be taken inside the graph; claim_output_name frees it.
        prog = torch.onnx.export(module, args, input_names=list(io.input_names), output_names=[_TMP_OUTPUT],
                                 dynamic_shapes=dyn, opset_version=OPSET, dynamo=True, verbose=False)
    proto = prog.model_proto
    claim_output_name(proto.graph, _TMP_OUTPUT, io.output_name)
    onnx.save(proto, str(path), save_as_external_data=False)


_TMP_OUTPUT = "edgecompress_output"


def _rename(graph, old: str, new: str) -> None:
    for n in graph.node:
        n.input[:] = [new if x == old else x for x in n.input]
        n.output[:] = [new if x == old else x for x in n.output]
    for v in list(graph.input) + list(graph.output) + list(graph.value_info) + list(graph.initializer):
        if v.name == old:
            v.name = new


def claim_output_name(graph, current: str, wanted: str) -> None:
    """Rename the graph output `current` to `wanted`, first renaming any inner value already called `wanted`."""
    taken = {x for n in graph.node for x in n.output} | {i.name for i in graph.initializer}
    if wanted in taken:
        _rename(graph, wanted, f"{wanted}_inner")
    _rename(graph, current, wanted)


def calibration_plan(quant, calib) -> dict:
    """How quantize_static will stream the calibration rows: rows, batches, batch size, method, stride."""
    from edgecompress.export.quant.calibration import count_batches, input_batches, stride_for
    c = quant.calibration
    have = sum(int(b["input_ids"].shape[0]) for b in input_batches(calib)) if calib is not None else 0
    rows = min(c.samples, have)
    if rows == 0:
        raise RuntimeFailure("static int8 needs calibration rows; the exporter got none (calib is empty)")
    n = count_batches(rows, c.batch_size)
    # Percentile/Entropy stack a stride's tensors into one array per tensor: batches of different sequence
    # lengths only stack one at a time, so histograms are merged batch by batch (stride 1).
    stride = stride_for(n) if c.method == "minmax" else 1
    return {"rows": rows, "batches": n, "batch_size": c.batch_size, "method": c.method, "stride": stride}


def quantize_file(fp32: Path, dest: Path, quant, calib, io: IOSpec, proto, excluded: list[str], tmp: Path,
                  plan: Optional[dict], keep_fp32: Optional[list[str]] = None) -> None:
    """onnxruntime int8 of the fp32 file into dest, with the `excluded` nodes left fp32. plan: calibration_plan()
    for static activations (None for dynamic). Runs in tmp: the quantizers write temp files into the CWD.
    keep_fp32: nodes left for a later rewrite (the 4-bit table), excluded without changing which nodes
    quantize_dynamic picks otherwise (an explicit node list would leave the pooler's Gemm fp32)."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    qt = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    weight_nodes = list(weight_matmuls(proto).values())
    inits = {i.name for i in proto.graph.initializer}
    gathers = [n.name for n in proto.graph.node if n.op_type == "Gather" and n.input[0] in inits]
    nodes = [n for n in weight_nodes + (gathers if quant.embeddings is not False else []) if n not in excluded]
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        if quant.activations == "dynamic":
            # embeddings unset and nothing excluded: quantize_dynamic's own choice of nodes (every MatMul + Gather).
            kw = {"nodes_to_quantize": nodes} if quant.embeddings is not None or excluded else {}
            if keep_fp32:
                kw["nodes_to_exclude"] = keep_fp32
            # The "Please consider to run pre-processing" warning is expected: pre-processing is skipped on purpose.
            quantize_dynamic(fp32, dest, per_channel=quant.per_channel, reduce_range=quant.reduce_range,
                             weight_type=qt[quant.weight_type], use_external_data_format=False, **kw)
        else:
            from edgecompress.export.quant.calibration import input_batches, make_reader, rebatch
            c = quant.calibration
            method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                      "entropy": CalibrationMethod.Entropy}[c.method]
            reader = make_reader(rebatch(input_batches(calib), plan["rows"], c.batch_size, io.pad_token_id),
                                 plan["batches"], list(io.input_names))
            extra = {"CalibStridedMinMax": plan["stride"], "CalibPercentile": c.percentile,
                     # s8 activations: symmetric ranges (zero point 0), what s8 kernels expect
                     "ActivationSymmetric": quant.activation_type == "s8"}
            quantize_static(fp32, dest, reader, quant_format=QuantFormat.QDQ, per_channel=quant.per_channel,
                            reduce_range=quant.reduce_range, activation_type=qt[quant.activation_type],
                            weight_type=qt[quant.weight_type], nodes_to_quantize=nodes, calibrate_method=method,
                            use_external_data_format=False, extra_options=extra, nodes_to_exclude=keep_fp32)
    except Exception as e:  # noqa: BLE001 - any quantizer failure is a runtime failure of this export
        raise RuntimeFailure(f"onnxruntime quantize_{quant.activations} failed: {type(e).__name__}: {e}") from e
    finally:
        os.chdir(cwd)


def weight_matmuls(proto) -> dict[str, str]:
    """{torch Linear name: ONNX node name} for every MatMul/Gemm whose weight is an initializer.

    The dynamo exporter records each node's module path in the "pkg.torch.onnx.name_scopes" metadata
    (['', 'inner', ..., 'inner.bert.encoder.layer.0.attention.self.query', 'linear_3']); the deepest scope is the
    Linear, minus the logits_module wrapper's "inner." prefix."""
    import ast
    inits = {i.name for i in proto.graph.initializer}
    out: dict[str, str] = {}
    for n in proto.graph.node:
        if n.op_type not in ("MatMul", "Gemm") or len(n.input) < 2 or n.input[1] not in inits:
            continue
        meta = {p.key: p.value for p in n.metadata_props}
        try:
            scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
        except (ValueError, SyntaxError):
            scopes = []
        mods = [s for s in scopes[:-1] if s]
        name = mods[-1].removeprefix("inner.") if mods else n.name
        out[name if name not in out else n.name] = n.name
    return out


def strip_debug_metadata(proto) -> None:
    """Drop per-node debug metadata (torch stack traces, module scopes): the device never reads it, and on small
    models it is most of the file (tiny BERT: 260 KB of node metadata vs 200 KB of int8 weights). The fp32
    intermediate keeps it: weight_matmuls reads the module scopes from there."""
    for n in proto.graph.node:
        del n.metadata_props[:]
        n.doc_string = ""
