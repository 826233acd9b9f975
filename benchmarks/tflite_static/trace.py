"""Where full int8 loses the default student: calibrated activation ranges and per-tensor SNR, fp32 vs full int8.

Calibrates static_wi8_ai8 (run.py's full-int8 row: same 128 train rows) on the fp32 .tflite, then
ai-edge-quantizer's own validate() compares every tensor of the int8 file with the fp32 file on 8 test rows.
Writes trace.json: the widest calibrated ranges, and the SNR (dB) of each op's output along the first encoder layer
and at the logits. ~1 min here.

Reproduce:  python benchmarks/tflite_static/trace.py [--student DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from run import DEFAULT_STUDENT, SEQ, calibration_rows, static_recipe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--student", default=DEFAULT_STUDENT)
    a = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer.utils.validation_utils import ValidationErrorMetric
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from edgecompress.data import batches, load_splits
    from edgecompress.export.base import IOSpec
    from edgecompress.export.quant.calibration import CalibData
    from edgecompress.export.tflite import TfliteExporter
    from edgecompress.recipe import DataCfg

    model = AutoModelForSequenceClassification.from_pretrained(a.student, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(a.student)
    sp = load_splits(DataCfg())
    io = IOSpec.for_model(model, tok, SEQ)
    rows_of = lambda split, n: CalibData(inputs=lambda: (x for x, _, _ in batches(  # noqa: E731
        tok, sp[split].subset(n, 0), 8, SEQ, shuffle=True, seed=0)))
    cal, _ = calibration_rows(rows_of("train", 128), io, 128)
    test, _ = calibration_rows(rows_of("test", 8), io, 8)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = TfliteExporter().export(model, io, None, None, Path(tmp)).file.read_bytes()
    q = quantizer.Quantizer(bytearray(fp32), static_recipe("full-int8"))
    ranges = q.calibrate({"serving_default": cal}, num_threads=1)
    q.quantize(ranges)
    res = q.validate(test_data={"serving_default": test}, error_metrics=[ValidationErrorMetric.SNR],
                     num_threads=1).get_signature_comparison_result("serving_default")
    db = lambda v: None if v is None or not np.isfinite(v) or v <= 0 else round(10 * float(np.log10(v)), 1)  # noqa: E731
    short = lambda name: name.split(";")[0].split("/")[-1] + (";" + name.split(";")[-1] if ";" in name else "")  # noqa: E731
    widest = sorted(((k, float(np.min(v["min"])), float(np.max(v["max"]))) for k, v in ranges.items()
                     if "min" in v and "input_ids" not in k and "word_embeddings;1" not in k),
                    key=lambda t: -(t[2] - t[1]) if np.isfinite(t[2] - t[1]) else -np.inf)
    it = Interpreter(model_content=fp32)
    names = {t["index"]: t["name"] for t in it.get_tensor_details()}
    inter = res.intermediate_tensors
    layer0 = []
    for o in it._get_ops_details():
        name = names[o["outputs"][0]]
        if "BertLayer_1" in name:
            break
        if name in inter and o["op_name"] not in ("RESHAPE", "TRANSPOSE"):
            layer0.append({"op": o["op_name"], "tensor": short(name), "snr_db": db(inter[name]["snr"])})
    out = {"calibration_rows": len(cal), "validate_rows": len(test),
           "nonfinite_ranges": [short(k) for k, mn, mx in widest if not np.isfinite(mx - mn)],
           "widest_finite_ranges": [{"tensor": short(k), "min": round(mn, 3), "max": round(mx, 3)}
                                    for k, mn, mx in widest if np.isfinite(mx - mn)][:8],
           "layer0_snr_db": layer0,
           "logits_snr_db": {short(k): db(v["snr"]) for k, v in res.output_tensors.items()}}
    Path(__file__).with_name("trace.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
