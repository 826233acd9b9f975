"""TFLite int8 with static activation ranges vs dynamic-range int8 vs fp32, on the default student.

Question (issue "Artifacts an app can ship"): does TFLite full int8 -- ai-edge-quantizer's static_wi8_ai8,
calibrated on real train rows -- keep test accuracy within 1 point of the fp32 .tflite? If so it would become the
tflite realization of `quantize.activations: static` (refused by edgecompress/formats.py today).

Rows (all from one fp32 conversion by the product's TfliteExporter; every int8 file is written by the exporter's
template with its quantize_program hook swapped for the recipe of the row, so the files carry the same signature,
padding and io.json as the product's):
- tflite-fp32, tflite-int8-dynamic: the product's files today (dynamic_wi8_afp32).
- full-int8: static_wi8_ai8 on every supported op (the candidate).
- full-int8-attn-fp32: the same with the attention mask ADD and SOFTMAX left fp32 (is the additive mask the cause?).
- static-fc-only: static int8 on FULLY_CONNECTED only (inputs/outputs calibrated), everything else fp32, embedding
  table int8 as in the dynamic file: the scope of onnx's quantize_static.
- full-int16act (static_wi8_ai16; --int16-rows test rows only, it runs on reference kernels): does precision fix it?
Every static file keeps fp32 logits out (OUTPUT not quantized): otherwise the output tensor is int8 codes.

Per row: test accuracy (packaged VADER test split, all 1,586 rows unless said), points vs the fp32 .tflite, label
agreement and SQNR vs the fp32 .tflite's logits, file MiB, p50/p90 ms of one [1, 128] call in ai_edge_litert's
Interpreter, 1 thread, the files called in turn (interleaved, so load from other jobs on this shared 2-core machine
hits them alike), export seconds. Calibration: --calib-rows shuffled train rows (quantize.calibration.samples'
default, 128), streamed to the exporter as a CalibData like Pipeline.calib_data, padded to the [1, 128] signature.

Reproduce:  python benchmarks/tflite_static/run.py [--student DIR] [--calib-rows 128] [--test-rows 0] [--runs 100]
Default student: /tmp/defrun/runs/default/artifacts/2-prune/model (the default run's pruned student). ~3 min here.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp (DESIGN.md: threads)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).parent
SEQ, THREADS = 128, 1
DEFAULT_STUDENT = "/tmp/defrun/runs/default/artifacts/2-prune/model"


def args_(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--student", default=DEFAULT_STUDENT)
    ap.add_argument("--calib-rows", type=int, default=128, help="quantize.calibration.samples (the default is 128)")
    ap.add_argument("--test-rows", type=int, default=0, help="0: the whole test split")
    ap.add_argument("--int16-rows", type=int, default=256, help="test rows for the int16-activation row (0: skip)")
    ap.add_argument("--runs", type=int, default=100, help="timed calls per file (after 5 warmup calls)")
    ap.add_argument("--out", default=str(HERE / "results"))
    return ap.parse_args(argv)


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10((ref ** 2).sum() / max(((ref - got) ** 2).sum(), 1e-30)))


def calibration_rows(calib, io, samples: int) -> tuple[list[dict], int]:
    """`samples` rows of the exporter's calib as [1, SEQ] int32 signature inputs, padded like the host loader."""
    from edgecompress.export.quant.calibration import input_batches, rebatch
    from edgecompress.export.tflite import pad_rows
    out, n = [], 0
    for b in rebatch(input_batches(calib), samples, 1, io.pad_token_id):
        chunks, rows = pad_rows(b["input_ids"][:, :SEQ], b["attention_mask"][:, :SEQ], (1, SEQ), io.pad_token_id)
        out.extend({"input_ids": i, "attention_mask": m} for i, m in chunks)
        n += rows
    return out, n


def static_recipe(kind: str):
    from ai_edge_quantizer import algorithm_manager, qtyping, recipe_manager
    op, keep = qtyping.TFLOperationName, algorithm_manager.AlgorithmName.NO_QUANTIZE
    rm = recipe_manager.RecipeManager()
    if kind == "static-fc-only":
        rm.add_static_config(regex=".*", operation_name=op.FULLY_CONNECTED, activation_num_bits=8, weight_num_bits=8)
        rm.add_dynamic_config(regex=".*", operation_name=op.EMBEDDING_LOOKUP, num_bits=8)  # int8 table, fp32 out
    else:  # recipe.static_wi8_ai8() / static_wi8_ai16()
        rm.add_static_config(regex=".*", operation_name=op.ALL_SUPPORTED, weight_num_bits=8,
                             activation_num_bits=16 if kind == "full-int16act" else 8)
    if kind == "full-int8-attn-fp32":  # the mask ADD (scores + finfo.min where masked) and the softmax after it
        for o in (op.ADD, op.SOFTMAX):
            rm.add_quantization_config(regex="SelfAttention_self", operation_name=o, algorithm_key=keep)
    rm.add_quantization_config(regex=".*", operation_name=op.OUTPUT, algorithm_key=keep)  # fp32 logits out
    return rm.get_quantization_recipe()


def static_hook(kind: str):
    """A quantize_program hook: calibrate on the exporter's calib rows, quantize with the row's recipe."""
    def hook(job, program: bytes) -> bytes:
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_quantizer import quantizer
        rows, n = calibration_rows(job.calib, job.io, job.quant.calibration.samples)
        sig = next(iter(Interpreter(model_content=program).get_signature_list()))
        q = quantizer.Quantizer(bytearray(program), static_recipe(kind))
        t0 = time.perf_counter()
        out = bytes(q.quantize(q.calibrate({sig: rows}, num_threads=1)).quantized_model)
        job.details.update(recipe=kind, calibration_rows=n, calibrate_and_quantize_s=round(time.perf_counter() - t0, 1))
        return out
    return hook


def op_dtypes(path: Path) -> dict:
    """{op name: count} of the ops whose first output is fp32 in the file (what stayed float)."""
    from collections import Counter

    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=str(path))
    dt = {t["index"]: t["dtype"] for t in it.get_tensor_details()}
    return dict(Counter(o["op_name"] for o in it._get_ops_details() if dt[o["outputs"][0]] == np.float32))


def load_student(a) -> tuple:
    """The student, its tokenizer, the test batches and labels, the export IOSpec and the calibration rows."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from edgecompress.data import batches, load_splits
    from edgecompress.export.base import IOSpec
    from edgecompress.export.quant.calibration import CalibData
    from edgecompress.recipe import DataCfg

    model = AutoModelForSequenceClassification.from_pretrained(a.student, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(a.student)
    splits = load_splits(DataCfg())
    test = splits["test"] if not a.test_rows else splits["test"].subset(a.test_rows, 0)
    test_b = [(x, y) for x, y, _ in batches(tok, test, 32, SEQ, shuffle=False, group_by_length=False)]
    labels = np.concatenate([y for _, y in test_b])
    io = IOSpec.for_model(model, tok, SEQ)
    train = splits["train"]
    # What Pipeline.calib_data hands an exporter: shuffled train rows, calibration.batch_size (8) at a time.
    calib = CalibData(inputs=lambda: (x for x, _, _ in batches(tok, train.subset(a.calib_rows, 0), 8, SEQ,
                                                                shuffle=True, seed=0)))
    return model, io, test_b, labels, calib


def results_header(a, model, test_b, labels) -> dict:
    """The results dict before any row: the run's settings and the torch fp32 test accuracy."""
    import torch
    with torch.no_grad():
        torch_logits = np.concatenate([model(**{k: torch.from_numpy(v) for k, v in x.items()}).logits.numpy()
                                       for x, _ in test_b])
    return {"student": a.student, "test_rows": int(len(labels)), "calibration_rows": a.calib_rows,
            "max_seq_len": SEQ,
            "torch_fp32_test_accuracy": round(float((torch_logits.argmax(1) == labels).mean()), 4),
            "machine": {"cpu": platform.machine(), "threads": THREADS,
                        "OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"]},
            "versions": versions(), "rows": []}


def row_plan(a) -> list[tuple]:
    """(name, QuantSpec or None for fp32, static recipe kind or None) per row, in the order they run."""
    from edgecompress.recipe import QuantSpec
    static = QuantSpec(activations="static", calibration={"samples": a.calib_rows})
    rows = [("tflite-fp32", None, None), ("tflite-int8-dynamic", QuantSpec(), None),
            ("full-int8", static, "full-int8"), ("full-int8-attn-fp32", static, "full-int8-attn-fp32"),
            ("static-fc-only", static, "static-fc-only")]
    if a.int16_rows:
        rows.append(("full-int16act", static, "full-int16act"))
    return rows


def row_exporter(kind, fp32_bytes):
    """A TfliteExporter for one row: the fp32 program reused once converted, the row's static recipe if any."""
    from edgecompress.export.tflite import TfliteExporter
    exp = TfliteExporter()
    if fp32_bytes is not None:  # one litert-torch conversion, reused by the int8 exports
        exp.convert = lambda module, io_, tmp, _b=fp32_bytes: _b
    if kind is not None:
        exp.quantize_program = static_hook(kind)
    return exp


def score_row(name: str, lg: np.ndarray, fp32_logits: np.ndarray, labels: np.ndarray, res, export_s: float,
              eval_s: float) -> dict:
    """One row's accuracy, agreement and SQNR vs the fp32 .tflite on the same rows, file size and timings."""
    from edgecompress.export.base import file_mb
    ref = fp32_logits[: len(lg)]
    lab = labels[: len(lg)]
    row = {"name": name, "test_rows": int(len(lg)), "test_accuracy": round(float((lg.argmax(1) == lab).mean()), 4),
           "tflite_fp32_accuracy_same_rows": round(float((ref.argmax(1) == lab).mean()), 4),
           "agreement_vs_tflite_fp32": round(float((lg.argmax(1) == ref.argmax(1)).mean()), 4),
           "sqnr_db_vs_tflite_fp32": round(sqnr_db(ref, lg), 1) if name != "tflite-fp32" else None,
           "file_mib": file_mb(res.file), "export_s": export_s, "eval_s": eval_s,
           "fp32_ops": op_dtypes(res.file), "details": res.details}
    row["points_vs_tflite_fp32"] = round(100 * (row["test_accuracy"] - row["tflite_fp32_accuracy_same_rows"]), 2)
    return row


def run_rows(a, model, io, test_b, labels, calib, results: dict) -> dict:
    """Export, evaluate and save each row in turn; returns {name: infer} of the files to time interleaved."""
    out_dir = Path(tempfile.mkdtemp(prefix="tflite_static."))
    fp32_bytes = None
    infers, logits = {}, {}
    for name, quant, kind in row_plan(a):
        exp = row_exporter(kind, fp32_bytes)
        t0 = time.perf_counter()
        res = export_with(exp, model, io, quant, calib, out_dir / name)
        export_s = round(time.perf_counter() - t0, 1)
        if fp32_bytes is None:
            fp32_bytes = res.file.read_bytes()
        infer = exp.load(res.file, threads=THREADS)
        n_eval = a.int16_rows if name == "full-int16act" else len(test_b) * 32
        t0 = time.perf_counter()
        lg = np.concatenate([infer(x) for x, _ in test_b[: -(-n_eval // 32)]])
        eval_s = round(time.perf_counter() - t0, 1)
        logits[name] = lg
        if name != "full-int16act":  # its reference-kernel p50 is ~10x the others': timed on its own below
            infers[name] = infer
        row = score_row(name, lg, logits["tflite-fp32"], labels, res, export_s, eval_s)
        if name == "full-int16act":
            row.update(interleaved_latency({name: infer}, io, 20)[name])
        results["rows"].append(row)
        print(json.dumps({k: row[k] for k in ("name", "test_rows", "test_accuracy", "points_vs_tflite_fp32",
                                              "sqnr_db_vs_tflite_fp32", "file_mib", "export_s")}), flush=True)
        save(results, a.out)
    return infers


def main(argv=None) -> None:
    a = args_(argv)
    import torch
    torch.set_num_threads(THREADS)

    t_start = time.perf_counter()
    model, io, test_b, labels, calib = load_student(a)
    results = results_header(a, model, test_b, labels)
    infers = run_rows(a, model, io, test_b, labels, calib, results)
    lat = interleaved_latency(infers, io, a.runs)
    for row in results["rows"]:
        row.update(lat.get(row["name"], {}))
    results["total_s"] = round(time.perf_counter() - t_start, 1)
    save(results, a.out)
    print(Path(a.out + ".md").read_text())


def export_with(exp, model, io, quant, calib, out_dir):
    """exp.export with the tflite static refusal lifted for this call only (formats.py is the product's switch)."""
    import dataclasses

    import edgecompress.formats as formats
    spec = formats.FORMATS["tflite"]
    formats.FORMATS["tflite"] = dataclasses.replace(
        spec, refuses=tuple(r for r in spec.refuses if r.field != "activations"))
    try:
        return exp.export(model, io, quant, calib if quant is not None else None, out_dir)
    finally:
        formats.FORMATS["tflite"] = spec


def interleaved_latency(infers: dict, io, runs: int, warmup: int = 5) -> dict:
    """p50/p90 ms of one [1, SEQ] call per file, the files called in turn (same load on each)."""
    from edgecompress.bench.stats import percentile
    x = io.example_inputs(1, SEQ, seed=1)
    x["attention_mask"][:] = 1
    for f in infers.values():
        for _ in range(warmup):
            f(x)
    times = {n: [] for n in infers}
    for _ in range(runs):
        for n, f in infers.items():
            t0 = time.perf_counter()
            f(x)
            times[n].append((time.perf_counter() - t0) * 1000)
    return {n: {"p50_ms": round(percentile(t, 50), 2), "p90_ms": round(percentile(t, 90), 2), "timed_runs": runs}
            for n, t in times.items()}


def versions() -> dict:
    from importlib.metadata import version
    return {d: version(d) for d in ("ai-edge-litert", "ai-edge-quantizer", "litert-torch", "torch", "transformers")}


def save(results: dict, out: str) -> None:
    Path(out + ".json").write_text(json.dumps(results, indent=2))
    lines = [f"student `{results['student']}`; calibration {results['calibration_rows']} train rows; signature "
             f"[1, {results['max_seq_len']}]; {THREADS} thread, interleaved p50/p90; torch fp32 test accuracy "
             f"{results['torch_fp32_test_accuracy']} ({results['test_rows']} rows)", "",
             "| file | test rows | test acc | Δ pts vs tflite fp32 | agreement vs fp32 | SQNR dB | MiB | p50 ms "
             "| p90 ms | export s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        lines.append(f"| {r['name']} | {r['test_rows']} | {r['test_accuracy']:.4f} | {r['points_vs_tflite_fp32']:+.2f} | "
                     f"{r['agreement_vs_tflite_fp32']:.4f} | {r['sqnr_db_vs_tflite_fp32'] or '—'} | "
                     f"{r['file_mib']:.1f} | {r.get('p50_ms', '')} | {r.get('p90_ms', '')} | {r['export_s']} |")
    Path(out + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
