"""Int8 per format for the default student: dynamic / static / QAT / codebook-8 / codebook-4, plus optimum's
ORTQuantizer dynamic export of the same fp32 student, measured in one run.

Per row: test accuracy (packaged VADER test split, all 1,586 rows) and its delta vs the fp32 torch student, label
agreement with the fp32 student, file MiB, p50 ms (batch 1, seq 128, 1 thread, onnxruntime intra_op=1,
OMP_WAIT_POLICY=PASSIVE). Each row is saved to results.json as soon as it is measured (a killed run keeps them).

Subsetted for a 2-core shared machine (~25 min): QAT trains once, 1 epoch on 1,024 train rows (batch 16,
max_len 64) by self-distillation from the fp32 student, and the QAT weights go through each format's dynamic int8
(exactly what QuantSpec(qat=...) does inside an exporter, run once instead of once per format); static calibration
uses 128 train rows; .pte rows are limited to dynamic, static and QAT (each lowering is 1-3 min here); .pte and
.ptl codebook rows are not built because those runtimes expand codebooks to dense fp32 (the file would be the fp32
file: the exporter says so in its notes).

Reproduce:  python benchmarks/int8/run.py          (student = latest prune-* artifact in $EDGECOMPRESS_HOME/store)
            python benchmarks/int8/run.py --only onnx-dynamic,onnx-static
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch/onnxruntime load libgomp (DESIGN.md: threads)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).parent
SEQ, BATCH, THREADS = 128, 1, 1
QAT_ROWS, CALIB_ROWS = 1024, 128
HEAD_TO_HEAD = ("onnx-fp32", "onnx-dynamic", "onnx-dynamic-noemb", "onnx-static", "onnx-qat",
                "optimum-ortquantizer-avx2-dynamic")


def latest_student(store: Path) -> Path:
    cands = sorted(store.glob("prune-*/manifest.json"), key=lambda p: p.stat().st_mtime)
    if not cands:
        raise SystemExit(f"no prune-* artifact under {store}; run `edgecompress run` once to build the student")
    return cands[-1].parent / "model"


def p50_ms(infer, io, runs: int = 30, warmup: int = 5) -> float:
    from edgecompress.bench.stats import in_process_p50_ms
    x = io.example_inputs(BATCH, SEQ, seed=1)
    x["attention_mask"][:] = 1
    return round(in_process_p50_ms(infer, x, runs, warmup), 2)


def predict(infer, test_batches) -> np.ndarray:
    return np.concatenate([np.asarray(infer(x)).argmax(-1) for x, _ in test_batches])


def parse_args(argv=None) -> set[str]:
    """The row names given with --only (empty: every row)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="comma-separated row names")
    args = ap.parse_args(argv)
    return set(filter(None, args.only.split(",")))


@dataclass
class Bench:
    """What every row is measured against: the fp32 student, its test batches and predictions, the IO spec and the
    calibration / QAT data the exporters get."""
    student_dir: Path
    model: object
    test_b: list
    labels: np.ndarray
    ref: np.ndarray             # the fp32 torch student's test predictions
    fp32_acc: float
    io: object
    calib: object


def load_bench() -> Bench:
    import torch
    from transformers import AutoModelForSequenceClassification

    from edgecompress.data import EVAL_BATCH, batches, load_splits
    from edgecompress.export.base import IOSpec
    from edgecompress.export.quant.calibration import CalibData
    from edgecompress.modeling import load_tokenizer
    from edgecompress.paths import home
    from edgecompress.recipe import DataCfg

    student_dir = latest_student(home() / "store")
    model = AutoModelForSequenceClassification.from_pretrained(str(student_dir), local_files_only=True).eval()
    tok = load_tokenizer(student_dir)
    splits = load_splits(DataCfg())
    test_b = [(x, y) for x, y, _ in batches(tok, splits["test"], EVAL_BATCH, SEQ, shuffle=False, group_by_length=False)]
    labels = np.concatenate([y for _, y in test_b])
    io = IOSpec.for_model(model, tok, SEQ)
    train_sub = splits["train"].subset(max(QAT_ROWS, CALIB_ROWS), seed=0)
    calib = CalibData(inputs=lambda: (x for x, _, _ in batches(tok, train_sub, 8, SEQ, shuffle=True, seed=1)),
                      train=lambda: batches(tok, train_sub, 16, 64, shuffle=True, seed=2),
                      validation=lambda: [(x, y) for x, y, _ in batches(tok, splits["validation"], 32, SEQ,
                                                                         shuffle=False)])
    with torch.no_grad():
        ref = np.concatenate([model(**{k: torch.from_numpy(v) for k, v in x.items()}).logits.argmax(-1).numpy()
                              for x, _ in test_b])
    return Bench(student_dir, model, test_b, labels, ref, float(np.mean(ref == labels)), io, calib)


def new_results(bench: Bench, only: set[str], out_json: Path) -> dict:
    """The results header; with --only, the rows of the previous run that are not rerun are kept."""
    import torch
    results = {"student": str(bench.student_dir), "fp32_torch_test_accuracy": bench.fp32_acc,
               "test_rows": int(len(bench.labels)),
               "machine": {"cpu": platform.processor() or platform.machine(), "threads": THREADS,
                           "OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"], "torch": torch.__version__},
               "subsets": {"qat_train_rows": QAT_ROWS, "qat_epochs": 1, "calibration_rows": CALIB_ROWS},
               "rows": []}
    if out_json.is_file() and only:
        prev = json.loads(out_json.read_text())
        results["rows"] = [r for r in prev.get("rows", []) if r["name"] not in only]
    return results


class QatOnce:
    """The QAT student, trained on first call and shared by every QAT row (one run instead of one per format)."""

    def __init__(self, bench: Bench):
        self.bench = bench
        self.model = None
        self.seconds = None

    def __call__(self):
        from edgecompress.export.quant.qat import qat_finetune
        from edgecompress.recipe import TrainCfg
        if self.model is None:
            t0 = time.perf_counter()
            calib = self.bench.calib
            self.model, _ = qat_finetune(self.bench.model, calib.train()[: QAT_ROWS // 16], TrainCfg(
                epochs=1, learning_rate=2e-5, batch_size=16, warmup_ratio=0.1), val_batches=calib.train()[-8:],
                static=False)
            self.seconds = round(time.perf_counter() - t0, 1)
        return self.model


def row_plan(model, get_qat: QatOnce) -> list[tuple]:
    """(name, format, model getter, quant) per row, in table order; quant carries the host profile's int8 flavour."""
    from edgecompress.profiles import load_profile
    from edgecompress.recipe import QuantSpec

    flavour = load_profile("host").int8
    spec = lambda **kw: QuantSpec(**kw).with_profile(flavour)  # noqa: E731
    return [
        ("onnx-fp32", "onnx", lambda: model, None),
        ("onnx-dynamic", "onnx", lambda: model, spec()),
        ("onnx-dynamic-noemb", "onnx", lambda: model, spec(embeddings=False)),
        ("onnx-static", "onnx", lambda: model, spec(activations="static",
                                                    calibration={"samples": CALIB_ROWS, "method": "minmax"})),
        ("onnx-static-percentile", "onnx", lambda: model, spec(activations="static", calibration={
            "samples": CALIB_ROWS, "method": "percentile"})),
        ("onnx-qat", "onnx", get_qat, spec()),
        ("onnx-codebook8", "onnx", lambda: model, spec(weights="codebook", codebook_bits=8, embeddings=True)),
        ("onnx-codebook4", "onnx", lambda: model, spec(weights="codebook", codebook_bits=4, embeddings=True)),
        ("optimum-ortquantizer-avx2-dynamic", "optimum", lambda: model, None),
        ("ptl-fp32", "ptl", lambda: model, None),
        ("ptl-dynamic", "ptl", lambda: model, spec()),
        ("ptl-dynamic-emb8", "ptl", lambda: model, spec(embeddings=True)),
        ("ptl-qat", "ptl", get_qat, spec()),
        ("pte-dynamic", "pte", lambda: model, spec()),
        ("pte-static", "pte", lambda: model, spec(activations="static", calibration={"samples": CALIB_ROWS})),
        ("pte-qat", "pte", get_qat, spec()),
    ]


def export_and_load(name: str, fmt: str, model, quant, bench: Bench, tmp: Path):
    """(file, infer_fn, notes, details) of one row's file: optimum's own path, or the product's exporter."""
    from edgecompress.registry import EXPORTERS
    if fmt == "optimum":
        path, infer, notes = optimum_dynamic(bench.student_dir, tmp, bench.io)
        return path, infer, notes, {}
    exp = EXPORTERS.get(fmt)(batch=BATCH)  # .pte bakes its largest batch in: export for the batch timed here
    res = exp.export(model, bench.io, quant, bench.calib, tmp)
    return res.file, exp.load(res.file, threads=THREADS), res.notes, res.details


def measure_row(name: str, fmt: str, get_model, quant, bench: Bench, get_qat: QatOnce):
    """One row's export, accuracy, latency and parity; returns (row, infer_fn kept for the head-to-head or None)."""
    from edgecompress.export.base import file_mb
    from edgecompress.export.parity import compare

    t0 = time.perf_counter()
    keep_dir = Path(tempfile.mkdtemp(prefix=f"int8bench.{name}.")) if name in HEAD_TO_HEAD else None
    with tempfile.TemporaryDirectory(prefix=f"int8bench.{name}.") as tmp:
        tmp = str(keep_dir) if keep_dir else tmp
        path, infer, notes, details = export_and_load(name, fmt, get_model(), quant, bench, Path(tmp))
        export_s = round(time.perf_counter() - t0, 1)
        preds = predict(infer, bench.test_b)
        lat = p50_ms(infer, bench.io)
        par = compare(bench.model, infer, bench.io, shapes=[(1, 17), (3, 41)]) if fmt != "optimum" else {}
        row = {"name": name, "format": fmt if fmt != "optimum" else "onnx",
               "test_accuracy": round(float(np.mean(preds == bench.labels)), 4),
               "delta_pt_vs_fp32": round(100 * (float(np.mean(preds == bench.labels)) - bench.fp32_acc), 2),
               "label_agreement": round(float(np.mean(preds == bench.ref)), 4), "file_mb": file_mb(path),
               "p50_ms": lat, "sqnr_db": round(par.get("sqnr_db", float("nan")), 1),
               "export_s": export_s, "notes": notes,
               "details": {k: v for k, v in details.items() if k in (
                   "calibration", "fallback", "codebook", "embeddings_int8", "activation_type",
                   "weight_type", "per_channel", "reduce_range", "non_delegated_ops", "quant_nodes")}}
        if quant is not None and quant.qat is None and get_model is get_qat:
            row["qat_seconds"] = get_qat.seconds
    return row, (infer if keep_dir else None)


def save(results: dict, out_json: Path) -> None:
    out_json.write_text(json.dumps(results, indent=2, default=str))


def main(argv=None) -> None:
    only = parse_args(argv)

    import torch
    torch.set_num_threads(THREADS)

    bench = load_bench()
    out_json = HERE / "results.json"
    results = new_results(bench, only, out_json)
    print(f"student {bench.student_dir}: fp32 torch test accuracy {bench.fp32_acc:.4f}", flush=True)
    get_qat = QatOnce(bench)
    kept: dict = {}
    for name, fmt, get_model, quant in row_plan(bench.model, get_qat):
        if only and name not in only:
            continue
        try:
            row, infer = measure_row(name, fmt, get_model, quant, bench, get_qat)
            if infer is not None:
                kept[name] = infer
        except Exception as e:  # noqa: BLE001 - one failing row must not lose the others
            row = {"name": name, "format": fmt, "error": f"{type(e).__name__}: {str(e)[:300]}"}
        results["rows"] = [r for r in results["rows"] if r["name"] != name] + [row]
        save(results, out_json)  # each row at once: a killed run keeps what it measured
        print(json.dumps({k: v for k, v in row.items() if k not in ("notes", "details")}), flush=True)
    if len(kept) >= 2:
        # The per-row p50s above were taken minutes apart on a shared 2-core machine; ours vs optimum is decided
        # here, interleaved round-robin in one process so background load hits every file alike.
        results["head_to_head_p50_ms"] = interleaved(kept, bench.io)
        save(results, out_json)
        print(json.dumps(results["head_to_head_p50_ms"]), flush=True)
    write_md(results)


def interleaved(infers: dict, io, rounds: int = 8, per_round: int = 10) -> dict:
    x = io.example_inputs(BATCH, SEQ, seed=1)
    x["attention_mask"][:] = 1
    times: dict[str, list[float]] = {k: [] for k in infers}
    for f in infers.values():
        for _ in range(3):
            f(x)
    for _ in range(rounds):
        for k, f in infers.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                f(x)
                times[k].append((time.perf_counter() - t0) * 1000)
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def optimum_dynamic(student_dir: Path, tmp: Path, io):
    """optimum's path: ORTModelForSequenceClassification export, then ORTQuantizer with AutoQuantizationConfig.avx2
    dynamic per-channel (what its docs show for x86)."""
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    ORTModelForSequenceClassification.from_pretrained(str(student_dir), export=True).save_pretrained(tmp / "fp32")
    q = ORTQuantizer.from_pretrained(tmp / "fp32")
    q.quantize(save_dir=tmp / "int8", quantization_config=AutoQuantizationConfig.avx2(is_static=False,
                                                                                      per_channel=True))
    path = next((tmp / "int8").glob("*.onnx"))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def infer(x):
        feed = {"input_ids": x["input_ids"], "attention_mask": x["attention_mask"],
                "token_type_ids": np.zeros_like(x["input_ids"])}
        return sess.run(None, {n: feed[n] for n in names})[0]

    return path, infer, ["optimum ORTQuantizer, AutoQuantizationConfig.avx2(is_static=False, per_channel=True)"]


def write_md(results: dict) -> None:
    lines = [f"# int8 per format: default student ({Path(results['student']).parent.name})", "",
             f"fp32 torch student test accuracy: **{results['fp32_torch_test_accuracy']:.4f}** on "
             f"{results['test_rows']} VADER test rows. Batch {BATCH}, seq {SEQ}, {THREADS} thread, "
             f"OMP_WAIT_POLICY={results['machine']['OMP_WAIT_POLICY']}, 2-core shared x86_64 machine (p50 is noisy: "
             f"other jobs ran alongside). Subsets: {json.dumps(results['subsets'])}.", "",
             "| row | format | test acc | Δ pt vs fp32 | label agreement | file MiB | p50 ms | SQNR dB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['format']} | error: {r['error'][:120]} | | | | | |")
            continue
        lines.append(f"| {r['name']} | {r['format']} | {r['test_accuracy']:.4f} | {r['delta_pt_vs_fp32']:+.2f} | "
                     f"{r['label_agreement']:.4f} | {r['file_mb']:.2f} | {r['p50_ms']:.1f} | {r['sqnr_db']} |")
    if results.get("head_to_head_p50_ms"):
        lines += ["", "p50 ms measured interleaved (round-robin, same process, same minutes): the fair latency "
                  "comparison, ours vs optimum's ORTQuantizer:", "",
                  "| file | p50 ms |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in results["head_to_head_p50_ms"].items()]
    lines += ["", "Notes per row (from ExportResult.notes):", ""]
    for r in results["rows"]:
        if r.get("notes"):
            lines.append(f"- **{r['name']}**: " + "; ".join(r["notes"]))
    (HERE / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
