"""ONNX exporter: torch.onnx (dynamo) with dynamic batch and sequence axes; int8 via onnxruntime.quantization.

Writes ONE file, model.onnx (weights embedded, models < 2 GB), plus io.json. The dynamo exporter, the torch
2.13 default, saves weights as external data (.onnx + .onnx.data) by default; a device copy of only the .onnx
would then fail to load, so we save with external_data=False.

int8 is onnxruntime `quantize_dynamic` QInt8 on the fp32 graph: weights int8 (per channel when the intent asks;
per-tensor measured cos 0.91 vs 0.98 on MiniLM), activations quantized at run time (MatMulInteger /
DynamicQuantizeLinear). `quant_pre_process` is not used: it fails on symbolic shapes and external-data files.
"""
from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from edgecompress.errors import RuntimeFailure
from edgecompress.export.base import (ExportResult, Exporter, InferFn, IOSpec, check_inputs, file_mb, logits_module,
                                      read_io_beside, write_io)
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
        import torch

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"model{self.suffix}"
        ex = io.example_inputs(io.example_batch, io.example_seq_len)
        args = (torch.from_numpy(ex["input_ids"]), torch.from_numpy(ex["attention_mask"]))
        batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
        seq = torch.export.Dim("seq", min=1, max=io.max_seq_len)
        dyn = {name: {0: batch, 1: seq} for name in io.input_names}
        notes: list[str] = []
        t0 = time.perf_counter()
        # Temp dir: the fp32 intermediate of an int8 export and the quantizer's "-inferred" copy live there,
        # never in out_dir or the CWD.
        with tempfile.TemporaryDirectory(prefix="edgecompress.onnx.") as tmp:
            fp32 = out if quant is None else Path(tmp) / "fp32.onnx"
            with torch.no_grad(), warnings.catch_warnings():
                # "axis name batch will not be used, since it shares the same shape constraints": expected, both
                # inputs share the batch and seq Dims on purpose.
                warnings.filterwarnings("ignore", message=r".*axis name.*will not be used.*")
                prog = torch.onnx.export(logits_module(model), args, input_names=list(io.input_names),
                                         output_names=[io.output_name], dynamic_shapes=dyn, opset_version=OPSET,
                                         dynamo=True, verbose=False)
            prog.save(str(fp32), external_data=False)
            if quant is not None:
                self._quantize(fp32, out, quant, Path(tmp))
        export_s = time.perf_counter() - t0
        if quant is not None:
            notes.append(f"int8: onnxruntime quantize_dynamic QInt8 weights "
                         f"({'per channel' if quant.per_channel else 'per tensor'}), activations dynamic")
        write_io(io, out_dir)
        details = {"opset": OPSET, "exporter": "torch.onnx dynamo", "dynamic_axes": {"batch": True, "seq": True},
                   "max_seq_len": io.max_seq_len, "precision": "fp32" if quant is None else "int8",
                   "export_s": round(export_s, 2), "file_mb": file_mb(out)}
        if quant is not None:
            details.update(quantizer="onnxruntime.quantization.quantize_dynamic", weight_type="QInt8",
                           per_channel=quant.per_channel)
        return ExportResult(file=out, notes=notes, details=details)

    @staticmethod
    def _quantize(fp32: Path, out: Path, quant, tmp: Path) -> None:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        qtmp = tmp / "int8.onnx"
        try:
            # The "Please consider to run pre-processing" warning is expected: pre-processing is skipped on purpose.
            quantize_dynamic(fp32, qtmp, per_channel=quant.per_channel, weight_type=QuantType.QInt8,
                             use_external_data_format=False)
        except Exception as e:  # noqa: BLE001 - any quantizer failure is a runtime failure of this export
            raise RuntimeFailure(f"onnxruntime quantize_dynamic failed: {type(e).__name__}: {e}") from e
        # Re-save so the device file is one self-contained file whatever the quantizer chose to write.
        onnx.save(onnx.load(str(qtmp)), str(out), save_as_external_data=False)

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
