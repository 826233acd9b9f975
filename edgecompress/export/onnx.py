"""ONNX exporter: torch.onnx (dynamo) with dynamic batch and sequence axes; int8 via onnxruntime.quantization.

Writes ONE file, model.onnx (weights embedded, models < 2 GB), plus io.json. The dynamo exporter, the torch
2.13 default, saves weights as external data (.onnx + .onnx.data) by default; a device copy of only the .onnx
would then fail to load, so we save with external_data=False.

int8, all with onnxruntime.quantization on the fp32 graph (`quant_pre_process` is not used: it fails on symbolic
shapes and external-data files), in the int8 flavour the QuantSpec carries (from the device profile):
- dynamic: `quantize_dynamic`, weights int8 (per channel when asked; per-tensor measured cos 0.91 vs 0.98 on
  MiniLM), activations quantized at run time (MatMulInteger / DynamicQuantizeLinear). Gather (the embedding table)
  is quantized unless `embeddings: false` (None keeps the spine's call, which always included it).
- static: `quantize_static`, QDQ format, ranges from calibration rows streamed through a CalibrationDataReader,
  `CalibStridedMinMax` stride batches at a time (quant/calibration.py), method MinMax / Percentile / Entropy. Only
  MatMul/Gemm with a weight initializer (+ Gather when embeddings) are quantized: activation x activation
  MatMuls (attention scores) stay fp32.
- codebook: weights clustered in torch (quant/codebook.py), stored in the file as uint8 indices + a centroid
  table decoded with Gather (4-bit: two indices per byte); runs in onnxruntime at fp32 speed, file ~4x/~8x smaller.
- QAT: fake-quant fine-tuning in torch first (quant/qat.py), then dynamic or static as above.
- fallback: layers ranked by sensitivity, the most sensitive left out via `nodes_to_exclude` until the drop
  measured in onnxruntime fits the budget (quant/fallback.py); listed in details["fallback"].
"""
from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from edgecompress.errors import RuntimeFailure
from edgecompress.export.base import (ExportResult, Exporter, InferFn, IOSpec, check_inputs, file_mb, logits_module,
                                      read_io_beside, write_io)
from edgecompress.export.quant import flavour_text
from edgecompress.registry import EXPORTERS

OPSET = 18  # >= 17 has LayerNormalization as one op; 18 is what the dynamo exporter emits natively
# Upper bound for the exported batch axis. ONNX keeps it symbolic ("batch"), so this only bounds torch.export's
# shape reasoning; onnxruntime accepts any batch.
_MAX_BATCH = 4096


@EXPORTERS.register("onnx")
class OnnxExporter(Exporter):
    name = "onnx"
    suffix = ".onnx"
    runtime = "onnxruntime"
    extra = "onnx"

    def missing(self) -> Optional[str]:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            import onnxruntime.quantization  # noqa: F401
            import onnxscript  # noqa: F401  (the dynamo exporter's translator)
        except ImportError as e:
            return f"ONNX export needs onnx, onnxscript and onnxruntime ({e.name} missing): pip install -e \".[onnx]\""
        return None

    def export(self, model, io: IOSpec, quant, calib: Optional[Iterable[dict[str, np.ndarray]]],
               out_dir: Path) -> ExportResult:
        from edgecompress.export.quant import prepare_torch

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"model{self.suffix}"
        t0 = time.perf_counter()
        fp32_model = model
        model, notes, qdetails = prepare_torch(model, quant, calib, embeddings_default=True)
        # Temp dir: the fp32 intermediate of an int8 export and the quantizer's "-inferred" copy live there,
        # never in out_dir or the CWD.
        with tempfile.TemporaryDirectory(prefix="edgecompress.onnx.") as tmp:
            fp32 = out if quant is None else Path(tmp) / "fp32.onnx"
            # The int8 paths strip their own output; their fp32 input keeps the module scopes they read.
            self._export_fp32(model, io, fp32, strip_metadata=quant is None)
            if quant is not None and quant.weights == "codebook":
                qdetails.update(self._codebook(fp32, out, quant))
                notes.append(f"codebook {quant.codebook_bits}-bit: {qdetails['codebook']['stored']} weight tensors "
                             f"stored as uint8 indices + centroid table (Gather decode); onnxruntime folds the decode "
                             f"at session start, so inference runs fp32 kernels")
            elif quant is not None:
                qdetails.update(self._int8(fp32, out, quant, calib, io, fp32_model, model, Path(tmp)))
                notes.append(f"int8 {quant.activations}: onnxruntime "
                             f"{'quantize_static QDQ, ' + quant.calibration.method if quant.activations == 'static' else 'quantize_dynamic'}"
                             f", {flavour_text(quant)}; embeddings {'int8' if qdetails['embeddings_int8'] else 'fp32'}"
                             + (f"; fp32 fallback for {len(qdetails['fallback']['excluded'])} layer(s)"
                                if "fallback" in qdetails else ""))
        export_s = time.perf_counter() - t0
        write_io(io, out_dir)
        details = {"opset": OPSET, "exporter": "torch.onnx dynamo", "dynamic_axes": {"batch": True, "seq": True},
                   "max_seq_len": io.max_seq_len, "precision": "fp32" if quant is None else "int8",
                   "export_s": round(export_s, 2), "file_mb": file_mb(out)}
        if quant is not None:
            details.update(per_channel=quant.per_channel, activations=quant.activations, weights=quant.weights,
                           activation_type=quant.activation_type, weight_type=quant.weight_type,
                           reduce_range=quant.reduce_range, **qdetails)
        return ExportResult(file=out, notes=notes, details=details)

    @staticmethod
    def _export_fp32(model, io: IOSpec, path: Path, strip_metadata: bool = False) -> None:
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
            prog = torch.onnx.export(logits_module(model), args, input_names=list(io.input_names),
                                     output_names=[io.output_name], dynamic_shapes=dyn, opset_version=OPSET,
                                     dynamo=True, verbose=False)
        proto = prog.model_proto
        if strip_metadata:
            _strip_debug_metadata(proto)
        onnx.save(proto, str(path), save_as_external_data=False)

    @staticmethod
    def _codebook(fp32: Path, out: Path, quant) -> dict:
        import onnx
        from edgecompress.export.quant.codebook import onnx_store_codebooks

        proto = onnx.load(str(fp32))
        stored = onnx_store_codebooks(proto, quant.codebook_bits)
        _strip_debug_metadata(proto)
        onnx.save(proto, str(out), save_as_external_data=False)
        return {"codebook": {"bits": quant.codebook_bits, "stored": len(stored), "storage": "uint8 indices + "
                             "float32 table, Gather decode" + (" (2 per byte)" if quant.codebook_bits == 4 else "")}}

    def _int8(self, fp32: Path, out: Path, quant, calib, io: IOSpec, fp32_model, model, tmp: Path) -> dict:
        import onnx

        proto = onnx.load(str(fp32), load_external_data=False)
        weight_nodes = _weight_matmuls(proto)
        emb = quant.embeddings is not False
        details: dict = {"embeddings_int8": emb, "quantized_matmuls": len(weight_nodes)}
        if quant.activations == "static":
            details["calibration"] = self._calibration_plan(quant, calib)
        excluded: list[str] = []
        if quant.fallback is not None:
            res = self._fallback(fp32, quant, calib, io, fp32_model, model, weight_nodes, tmp)
            excluded = [weight_nodes[n] for n in res.excluded]
            details["fallback"] = res.to_json()
        self._quantize_to(fp32, out, quant, calib, io, proto, excluded, tmp, details)
        return details

    @staticmethod
    def _calibration_plan(quant, calib) -> dict:
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

    @staticmethod
    def _quantize_to(fp32: Path, out: Path, quant, calib, io: IOSpec, proto, excluded: list[str], tmp: Path,
                     details: dict) -> None:
        import onnx
        from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                              quantize_static)

        qt = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
        qtmp = tmp / "int8.onnx"
        weight_nodes = list(_weight_matmuls(proto).values())
        gathers = [n.name for n in proto.graph.node if n.op_type == "Gather"
                   and n.input[0] in {i.name for i in proto.graph.initializer}]
        emb = quant.embeddings is not False
        try:
            if quant.activations == "dynamic":
                kw = {}
                if quant.embeddings is not None or excluded:  # None + no fallback: exactly the spine's call
                    kw["nodes_to_quantize"] = [n for n in weight_nodes + (gathers if emb else []) if n not in excluded]
                # The "Please consider to run pre-processing" warning is expected: pre-processing is skipped on purpose.
                quantize_dynamic(fp32, qtmp, per_channel=quant.per_channel, reduce_range=quant.reduce_range,
                                 weight_type=qt[quant.weight_type], use_external_data_format=False, **kw)
            else:
                from edgecompress.export.quant.calibration import input_batches, make_reader, rebatch
                plan = details["calibration"]
                c = quant.calibration
                method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                          "entropy": CalibrationMethod.Entropy}[c.method]
                reader = make_reader(rebatch(input_batches(calib), plan["rows"], c.batch_size, io.pad_token_id),
                                     plan["batches"], list(io.input_names))
                nodes = [n for n in weight_nodes + (gathers if emb else []) if n not in excluded]
                extra = {"CalibStridedMinMax": plan["stride"], "CalibPercentile": c.percentile,
                         # s8 activations: symmetric ranges (zero point 0), what s8 kernels expect
                         "ActivationSymmetric": quant.activation_type == "s8"}
                cwd = os.getcwd()
                os.chdir(tmp)  # the calibrator writes augmented models / temp files into the CWD
                try:
                    quantize_static(fp32, qtmp, reader, quant_format=QuantFormat.QDQ, per_channel=quant.per_channel,
                                    reduce_range=quant.reduce_range, activation_type=qt[quant.activation_type],
                                    weight_type=qt[quant.weight_type], nodes_to_quantize=nodes,
                                    calibrate_method=method, use_external_data_format=False, extra_options=extra)
                finally:
                    os.chdir(cwd)
        except Exception as e:  # noqa: BLE001 - any quantizer failure is a runtime failure of this export
            raise RuntimeFailure(f"onnxruntime quantize_{quant.activations} failed: {type(e).__name__}: {e}") from e
        # Re-save so the device file is one self-contained file whatever the quantizer chose to write.
        proto = onnx.load(str(qtmp))
        _strip_debug_metadata(proto)
        onnx.save(proto, str(out), save_as_external_data=False)

    def _fallback(self, fp32: Path, quant, calib, io: IOSpec, fp32_model, model, weight_nodes: dict, tmp: Path):
        import onnx
        from edgecompress.export.quant import labelled
        from edgecompress.export.quant.fallback import choose, reference, sensitivity

        fb = quant.fallback
        rows = labelled(calib, fb.samples)
        inputs, labels, base = reference(fp32_model, rows)
        # Only what this quantizer will touch: quantize_dynamic has no Gemm kernel (pooler/classifier stay fp32).
        op_of = {n.name: n.op_type for n in onnx.load(str(fp32), load_external_data=False).graph.node}
        names = [n for n, node in weight_nodes.items()
                 if quant.activations == "static" or op_of.get(node) == "MatMul"]
        rank_labels = labels if fb.metric == "accuracy" else None
        ranking = sensitivity(model, inputs[:4] if fb.metric == "sqnr" else inputs, fb.metric, rank_labels, names,
                              static=quant.activations == "static", per_channel=quant.per_channel)
        proto = onnx.load(str(fp32), load_external_data=False)
        cache: dict = {"details": {}}
        if quant.activations == "static":
            cache["details"]["calibration"] = self._calibration_plan(quant, calib)

        write_io(io, tmp)  # load() reads the io.json beside the candidate

        def drop(excluded: list[str]) -> float:
            cand = tmp / "fallback.onnx"
            self._quantize_to(fp32, cand, quant, calib, io, proto, [weight_nodes[n] for n in excluded], tmp,
                              cache["details"])
            infer = self.load(cand)
            preds = np.concatenate([infer(x).argmax(-1) for x in inputs])
            return base - float(np.mean(preds == labels))

        return choose(ranking, drop, fb.max_accuracy_drop, fb.max_layers)

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


def _weight_matmuls(proto) -> dict[str, str]:
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


def _strip_debug_metadata(proto) -> None:
    """Drop per-node debug metadata (torch stack traces, module scopes): the device never reads it, and on small
    models it is most of the file (tiny BERT: 260 KB of node metadata vs 200 KB of int8 weights). The fp32
    intermediate keeps it: _weight_matmuls reads the module scopes from there."""
    for n in proto.graph.node:
        del n.metadata_props[:]
        n.doc_string = ""
