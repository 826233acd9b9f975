"""Pruning benchmark: what unstructured, structured and vocabulary pruning do to the exported file.

On the default student (the latest `distill` artifact of the default recipe in the store) builds pruned
variants with the product's own stages, exports each with the product's ONNX exporter to fp32 and int8 (dynamic,
u8 x s8 per channel, int8 embeddings: the files `edgecompress run` ships), and reports params, file MB,
onnxruntime p50 (batch 1, seq 128, 1 intra-op thread, OMP_WAIT_POLICY=PASSIVE) and test accuracy (torch fp32
and the int8 file in onnxruntime) on the packaged VADER test split.

The CPU is shared, so latency is measured interleaved: every variant's session is loaded in this one process
and each round runs every variant once in a shuffled order; the speed-up is the median over rounds of the
per-round ratio baseline/variant, with its 10th-90th percentile as the spread.

Recovery fine-tuning (KD from the fine-tuned teacher) runs on the whole train split by default
(--recovery-samples N for a subset). A control row gives the unpruned student the same recovery, so the table
shows how much of a pruned variant's accuracy comes from the extra training rather than the pruning.

    python benchmarks/pruning/run.py                 # writes benchmarks/pruning/results.{json,md}
    python benchmarks/pruning/run.py --student DIR   # a specific student model folder
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch/onnxruntime load libgomp

import argparse  # noqa: E402
import copy  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from edgecompress.paths import store_dir  # noqa: E402

HERE = Path(__file__).parent
STORE = store_dir()


def latest(step: str) -> Path:
    dirs = sorted((p for p in STORE.glob(f"{step}-*") if (p / "model").is_dir()), key=lambda p: p.stat().st_mtime)
    if not dirs:
        sys.exit(f"no {step} artifact in {STORE}; run `edgecompress run` (default recipe) first")
    return dirs[-1]


def load(path: Path):
    from transformers import AutoModelForSequenceClassification
    from edgecompress.modeling import load_tokenizer
    m = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True).eval()
    return m, load_tokenizer(path)


def export(model, out: Path, max_seq_len: int) -> tuple[Path, Path]:
    """The files the product ships: edgecompress's ONNX exporter, fp32 and int8 (quantize_dynamic, u8 activations x
    s8 per-channel weights, int8 embeddings: the host profile's flavour), debug metadata stripped."""
    from edgecompress.export.base import IOSpec
    from edgecompress.recipe import QuantSpec
    from edgecompress.registry import EXPORTERS
    io = IOSpec(vocab_size=model.config.vocab_size, num_labels=model.config.num_labels, max_seq_len=max_seq_len)
    exporter = EXPORTERS.get("onnx")(batch=1)  # ONNX keeps the batch axis dynamic: batch only matters to fixed formats
    fp32 = exporter.export(model, io, None, None, out / "fp32").file
    int8 = exporter.export(model, io, QuantSpec(preset="manual"), None, out / "int8").file
    return fp32, int8


def session(path: Path):
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=o, providers=["CPUExecutionProvider"])


def ort_predictions(sess, tokenizer, split, max_seq_len: int) -> np.ndarray:
    from edgecompress.data import EVAL_BATCH, batches
    preds = np.zeros(len(split), dtype=np.int64)
    for inputs, _, idx in batches(tokenizer, split, EVAL_BATCH, max_seq_len, shuffle=False):
        preds[idx] = sess.run(None, inputs)[0].argmax(-1)
    return preds


def paired_ci95_pt(a: np.ndarray, b: np.ndarray, labels: np.ndarray) -> float:
    """Half-width, in points, of the normal-approximation 95% interval of acc(a) - acc(b) on the same rows
    (McNemar's variance: only rows where exactly one of the two is right carry the difference)."""
    ra, rb = a == labels, b == labels
    n01, n10 = int((ra & ~rb).sum()), int((~ra & rb).sum())
    var = (n01 + n10 - (n01 - n10) ** 2 / len(labels)) / len(labels) ** 2
    return float(100 * 1.96 * np.sqrt(max(var, 0.0)))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", type=Path, help="student model folder (default: latest distill artifact)")
    ap.add_argument("--teacher", type=Path, help="teacher model folder (default: latest teacher artifact)")
    ap.add_argument("--recovery-samples", type=int, default=None, help="train rows for recovery (default: all)")
    ap.add_argument("--recovery-epochs", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--train-threads", type=int, default=2)
    ap.add_argument("--vocab-min-counts", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--vocab-recovery-min-counts", type=int, nargs="*", default=[3, 4],
                    help="min_counts also built with recovery fine-tuning after the trim")
    ap.add_argument("--combined-min-count", type=int, default=3, help="vocab min_count of the combined variants")
    ap.add_argument("--out", type=Path, default=HERE)
    return ap.parse_args(argv)


def elapsed(t_start: float) -> str:
    """The log prefix: seconds since the run started."""
    return f"[{time.perf_counter() - t_start:6.0f} s]"


def build_variants(student, tok, ctx, teacher, recovery, args, t_start: float) -> list[dict]:
    """Every variant in table order, built with the product's own stages from copies of the student: the baseline
    first (speed-ups and deltas are against it), then the control, unstructured, structured, vocab and combined."""
    from edgecompress.compress.kd import recover
    from edgecompress.compress.prune import prune
    from edgecompress.compress.structured import prune_structured
    from edgecompress.compress.vocab import trim_vocab
    from edgecompress.recipe import PruneCfg, StructuredPruneCfg, VocabTrimCfg

    variants = []

    def add(name, kind, model, tokenizer, metrics, t0):
        variants.append({"name": name, "kind": kind, "model": model, "tokenizer": tokenizer,
                         "stage_metrics": metrics, "build_s": round(time.perf_counter() - t0, 1)})
        print(f"{elapsed(t_start)} built {name} in {variants[-1]['build_s']} s", flush=True)

    def run_stage(fn, model, cfg, tokenizer):
        res = fn(model, tokenizer, cfg, ctx, teacher)
        return res.model, res.tokenizer, res.metrics

    t0 = time.perf_counter()
    add("baseline", "none", student, tok, {}, t0)
    # Control: the same recovery on the unpruned student (KD from the teacher is also just more training).
    t0 = time.perf_counter()
    control = copy.deepcopy(student)
    add("control: baseline + recovery", "control", control, tok,
        {"recovery": recover(control, tok, recovery, ctx, teacher, "control")}, t0)
    for s in (0.3, 0.5):
        t0 = time.perf_counter()
        m, tk, met = run_stage(prune, copy.deepcopy(student), PruneCfg(sparsity=s), tok)
        add(f"unstructured {int(s * 100)}%", "unstructured", m, tk, met, t0)
    t0 = time.perf_counter()
    m, tk, met = run_stage(prune, copy.deepcopy(student), PruneCfg(sparsity=0.5, recovery=recovery), tok)
    add("unstructured 50% + recovery", "unstructured", m, tk, met, t0)
    structured = {}
    for hf, ff, label in ((1 / 6, 0.25, "heads 1/6, FFN 25%"), (1 / 3, 0.5, "heads 1/3, FFN 50%")):
        t0 = time.perf_counter()
        m, tk, met = run_stage(prune_structured, copy.deepcopy(student),
                               StructuredPruneCfg(heads_fraction=hf, ffn_fraction=ff, importance="taylor",
                                                  calibration_batches=8, recovery=recovery), tok)
        add(f"structured {label} + recovery", "structured", m, tk, met, t0)
        structured[ff] = (m, tk)
    for mc in args.vocab_min_counts:
        t0 = time.perf_counter()
        m, tk, met = run_stage(trim_vocab, copy.deepcopy(student), VocabTrimCfg(corpus_splits=["train"], min_count=mc), tok)
        add(f"vocab trim (train corpus, min_count {mc})", "vocab", m, tk, met, t0)
    for mc in args.vocab_recovery_min_counts:
        t0 = time.perf_counter()
        m, tk, met = run_stage(trim_vocab, copy.deepcopy(student),
                               VocabTrimCfg(corpus_splits=["train"], min_count=mc, recovery=recovery), tok)
        add(f"vocab trim (train corpus, min_count {mc}) + recovery", "vocab", m, tk, met, t0)
    t0 = time.perf_counter()
    sm, stk = structured[0.5]
    mc = args.combined_min_count
    m, tk, met = run_stage(trim_vocab, copy.deepcopy(sm), VocabTrimCfg(corpus_splits=["train"], min_count=mc,
                                                                        recovery=recovery), stk)
    add(f"vocab trim (min_count {mc}) + structured (heads 1/3, FFN 50%) + recovery", "combined", m, tk, met, t0)
    t0 = time.perf_counter()
    m2, tk2, met2 = run_stage(prune, copy.deepcopy(m), PruneCfg(sparsity=0.3), tk)
    add("vocab trim + structured + unstructured 30%", "combined", m2, tk2, met2, t0)
    return variants


def export_variants(variants: list[dict], test, max_seq_len: int, t_start: float) -> None:
    """Export each variant to fp32 and int8 ONNX and add to it: sizes, shape facts, open sessions, test predictions
    (torch fp32 and the int8 file) and both accuracies."""
    from edgecompress.compress.structured import heads_per_layer
    from edgecompress.compress.train import predict_logits
    from edgecompress.data import EVAL_BATCH, batches
    from edgecompress.modeling import count_params

    work = Path(tempfile.mkdtemp(prefix="prune-bench-onnx."))
    for i, v in enumerate(variants):
        model = v["model"]
        fp32, int8 = export(model, work / str(i), max_seq_len)
        v["params"] = count_params(model)
        v["encoder_params"] = sum(p.numel() for n, p in model.named_parameters() if ".encoder." in f".{n}")
        v["vocab_size"] = model.config.vocab_size
        v["heads_per_layer"] = heads_per_layer(model)
        v["intermediate_size"] = model.config.intermediate_size
        v["fp32_mb"] = fp32.stat().st_size / 1e6
        v["int8_mb"] = int8.stat().st_size / 1e6
        v["int8_gzip_mb"] = len(gzip.compress(int8.read_bytes(), 6)) / 1e6
        v["sessions"] = {"fp32": session(fp32), "int8": session(int8)}
        v["preds"] = {"fp32": predict_logits(model, batches(v["tokenizer"], test, EVAL_BATCH, max_seq_len,
                                                            shuffle=False)).argmax(-1),
                      "int8": ort_predictions(v["sessions"]["int8"], v["tokenizer"], test, max_seq_len)}
        v["test_accuracy_torch_fp32"] = float((v["preds"]["fp32"] == test.labels).mean())
        v["test_accuracy_onnx_int8"] = float((v["preds"]["int8"] == test.labels).mean())
        print(f"{elapsed(t_start)} exported {v['name']}: {v['int8_mb']:.1f} MB int8, "
              f"acc {v['test_accuracy_torch_fp32']:.4f}/{v['test_accuracy_onnx_int8']:.4f}", flush=True)


def time_interleaved(variants: list[dict], warmup: int, runs: int) -> dict[tuple[int, str], list[float]]:
    """Milliseconds per run of every (variant index, precision) session; each round runs every session once in a
    shuffled order, so load from other jobs lands on all of them alike."""
    from edgecompress.export.base import IOSpec
    feeds = {}
    for i, v in enumerate(variants):
        x = IOSpec(vocab_size=v["vocab_size"], num_labels=2, max_seq_len=128).example_inputs(1, 128, seed=0)
        feeds[i] = {"input_ids": x["input_ids"], "attention_mask": x["attention_mask"]}
    times = {(i, p): [] for i in range(len(variants)) for p in ("fp32", "int8")}
    for _ in range(warmup):
        for (i, p) in times:
            variants[i]["sessions"][p].run(None, feeds[i])
    rng = random.Random(0)
    keys = list(times)
    for _ in range(runs):
        rng.shuffle(keys)
        for (i, p) in keys:
            t = time.perf_counter()
            variants[i]["sessions"][p].run(None, feeds[i])
            times[(i, p)].append((time.perf_counter() - t) * 1e3)
    return times


def add_latency(variants: list[dict], times: dict[tuple[int, str], list[float]]) -> None:
    """p10/p50/p90 per session and the speed-up against the baseline (variant 0), round by round."""
    for i, v in enumerate(variants):
        for p in ("fp32", "int8"):
            ts = np.array(times[(i, p)])
            ratio = np.array(times[(0, p)]) / ts  # same round, same CPU weather
            v[f"{p}_p50_ms"] = float(np.percentile(ts, 50))
            v[f"{p}_p10_ms"], v[f"{p}_p90_ms"] = float(np.percentile(ts, 10)), float(np.percentile(ts, 90))
            v[f"{p}_speedup"] = float(np.median(ratio))
            v[f"{p}_speedup_p10_p90"] = [float(np.percentile(ratio, 10)), float(np.percentile(ratio, 90))]


def table_rows(variants: list[dict], labels: np.ndarray) -> list[dict]:
    """The JSON rows: each variant's measurements (models, sessions and predictions dropped) plus its deltas
    against the baseline."""
    base = variants[0]
    rows = []
    for v in variants:
        rows.append({k: v[k] for k in v if k not in ("model", "tokenizer", "sessions", "preds")}
                    | {"accuracy_delta_pt_fp32": 100 * (v["test_accuracy_torch_fp32"] - base["test_accuracy_torch_fp32"]),
                       "accuracy_delta_pt_int8": 100 * (v["test_accuracy_onnx_int8"] - base["test_accuracy_onnx_int8"]),
                       "accuracy_delta_ci95_pt_fp32": paired_ci95_pt(v["preds"]["fp32"], base["preds"]["fp32"], labels),
                       "accuracy_delta_ci95_pt_int8": paired_ci95_pt(v["preds"]["int8"], base["preds"]["int8"], labels),
                       "int8_size_ratio": base["int8_mb"] / v["int8_mb"]})
    return rows


def judge_targets(rows: list[dict]) -> dict:
    s50 = next(r for r in rows if r["name"].startswith("structured heads 1/3"))
    # The vocabulary target is judged on the first vocab row (table order) that meets both size and accuracy;
    # failing that, on the >= 2x row closest in accuracy, failing that on the biggest cut. Every row is in the table.
    vocs = [r for r in rows if r["kind"] == "vocab"]

    def worst_pt(r):
        return max(abs(r["accuracy_delta_pt_fp32"]), abs(r["accuracy_delta_pt_int8"]))
    big = [r for r in vocs if r["int8_size_ratio"] >= 2.0]
    ok = [r for r in big if worst_pt(r) <= 0.3]
    voc = ok[0] if ok else (min(big, key=worst_pt) if big else max(vocs, key=lambda r: r["int8_size_ratio"]))
    targets = {
        "structured_p50_speedup_ge_1.3": {"fp32": s50["fp32_speedup"], "int8": s50["int8_speedup"],
                                          "met": max(s50["fp32_speedup"], s50["int8_speedup"]) >= 1.3},
        "structured_accuracy_loss_le_1pt": {"delta_pt_fp32": s50["accuracy_delta_pt_fp32"],
                                            "delta_pt_int8": s50["accuracy_delta_pt_int8"],
                                            "met": min(s50["accuracy_delta_pt_fp32"], s50["accuracy_delta_pt_int8"]) >= -1.0},
        "vocab_int8_file_ge_2x": {"variant": voc["name"], "ratio": voc["int8_size_ratio"],
                                  "met": voc["int8_size_ratio"] >= 2.0},
        "vocab_accuracy_within_0.3pt": {"variant": voc["name"], "delta_pt_fp32": voc["accuracy_delta_pt_fp32"],
                                        "delta_pt_int8": voc["accuracy_delta_pt_int8"],
                                        "met": max(abs(voc["accuracy_delta_pt_fp32"]), abs(voc["accuracy_delta_pt_int8"])) <= 0.3},
    }
    # Recovery is also extra training: next to each target judged against the baseline (the model the user has),
    # give the same delta against the control (the unpruned student after the same recovery).
    ctrl = next(r for r in rows if r["kind"] == "control")
    for key, r in (("structured_accuracy_loss_le_1pt", s50), ("vocab_accuracy_within_0.3pt", voc)):
        if r["stage_metrics"].get("recovery"):
            targets[key]["vs_control_pt_fp32"] = 100 * (r["test_accuracy_torch_fp32"] - ctrl["test_accuracy_torch_fp32"])
            targets[key]["vs_control_pt_int8"] = 100 * (r["test_accuracy_onnx_int8"] - ctrl["test_accuracy_onnx_int8"])
    return targets


def assemble(args, student_dir: Path, teacher_dir: Path, test_samples: int, recovery, rows: list[dict],
             t_start: float) -> dict:
    import onnxruntime
    import torch
    import transformers
    from edgecompress.recipe import KD_ALPHA, KD_TEMPERATURE
    return {
        "student": str(student_dir), "teacher": str(teacher_dir),
        "student_manifest_id": _manifest_id(student_dir), "test_samples": test_samples,
        # recover() trains at the recipe's KD defaults: record the numbers it used.
        "recovery": {"kd_from": "fine-tuned teacher", "alpha": KD_ALPHA, "temperature": KD_TEMPERATURE,
                     **recovery.model_dump()},
        "measure": {"runtime": f"onnxruntime {onnxruntime.__version__}", "intra_op_threads": 1, "batch": 1,
                    "seq_len": 128, "warmup_runs": args.warmup, "runs": args.runs, "interleaved": True,
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
        "env": {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
                "machine": platform.machine(), "cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg(),
                "note": "load average at the end tells whether the CPU was shared while measuring"},
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "targets": judge_targets(rows), "rows": rows}


def write_results(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "results.md").write_text(markdown(result))
    print((out / "results.md").read_text())


def main(argv=None) -> int:
    args = parse_args(argv)

    import torch
    from edgecompress.compress.base import StageContext, Teacher
    from edgecompress.data import load_splits
    from edgecompress.recipe import DataCfg, TrainCfg

    torch.set_num_threads(args.train_threads)
    t_start = time.perf_counter()
    student_dir = args.student or latest("distill") / "model"
    teacher_dir = args.teacher or latest("teacher") / "model"
    student, tok = load(student_dir)
    teacher, teacher_tok = load(teacher_dir)
    data = DataCfg()
    splits = load_splits(data)
    test = splits["test"]
    recovery = TrainCfg(epochs=args.recovery_epochs, learning_rate=1e-4, batch_size=32,
                        max_train_samples=args.recovery_samples)
    ctx = StageContext(splits, data.max_seq_len, 0)

    variants = build_variants(student, tok, ctx, Teacher(teacher, teacher_tok), recovery, args, t_start)
    torch.set_num_threads(1)
    export_variants(variants, test, data.max_seq_len, t_start)
    add_latency(variants, time_interleaved(variants, args.warmup, args.runs))
    rows = table_rows(variants, test.labels)
    write_results(assemble(args, student_dir, teacher_dir, len(test), recovery, rows, t_start), args.out)
    return 0


def _manifest_id(model_dir: Path):
    m = Path(model_dir).parent / "manifest.json"
    return json.loads(m.read_text()).get("id") if m.is_file() else None


def markdown(r: dict) -> str:
    m = r["measure"]
    out = ["# Pruning benchmark", "",
           f"Student: `{r['student']}` (artifact {r['student_manifest_id']}); test split: {r['test_samples']} rows "
           f"(packaged VADER). {m['runtime']}, {m['intra_op_threads']} thread, batch {m['batch']}, seq {m['seq_len']}, "
           f"{m['runs']} interleaved runs after {m['warmup_runs']} warm-up, OMP_WAIT_POLICY={m['OMP_WAIT_POLICY']}; "
           f"load avg at end {', '.join(f'{x:.1f}' for x in r['env']['loadavg_at_end'])} on {r['env']['cpus']} vCPUs.",
           f"Recovery: KD (alpha 0.5, T 2) from the fine-tuned teacher on "
           f"{r['recovery']['max_train_samples'] or 'all'} train rows, {r['recovery']['epochs']:g} epoch, lr "
           f"{r['recovery']['learning_rate']:g}, best validation epoch kept. Speed-up = median over rounds of "
           "baseline/variant in the same round [p10-p90]. Total run: "
           f"{r['total_seconds'] / 60:.1f} min.", "",
           "| variant | params (M) | heads/layer | FFN | vocab | fp32 MB | int8 MB | int8 gz MB | fp32 p50 ms | "
           "fp32 speed-up | int8 p50 ms | int8 speed-up | acc fp32 | acc int8 (ONNX) | Δ pt (fp32) ±95% | Δ pt (int8) ±95% |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        out.append(
            f"| {x['name']} | {x['params'] / 1e6:.2f} | {'/'.join(map(str, x['heads_per_layer']))} | {x['intermediate_size']} | "
            f"{x['vocab_size']} | {x['fp32_mb']:.1f} | {x['int8_mb']:.1f} | {x['int8_gzip_mb']:.1f} | "
            f"{x['fp32_p50_ms']:.1f} | {x['fp32_speedup']:.2f}× [{x['fp32_speedup_p10_p90'][0]:.2f}–{x['fp32_speedup_p10_p90'][1]:.2f}] | "
            f"{x['int8_p50_ms']:.1f} | {x['int8_speedup']:.2f}× [{x['int8_speedup_p10_p90'][0]:.2f}–{x['int8_speedup_p10_p90'][1]:.2f}] | "
            f"{x['test_accuracy_torch_fp32']:.4f} | {x['test_accuracy_onnx_int8']:.4f} | "
            f"{x['accuracy_delta_pt_fp32']:+.2f} ±{x['accuracy_delta_ci95_pt_fp32']:.2f} | "
            f"{x['accuracy_delta_pt_int8']:+.2f} ±{x['accuracy_delta_ci95_pt_int8']:.2f} |")
    out += ["", "## Targets", ""]
    for k, v in r["targets"].items():
        out.append(f"- {k}: {'MET' if v['met'] else 'MISSED'} ("
                   + ", ".join(f"{a} {b:.3f}" if isinstance(b, float) else f"{a} {b}" for a, b in v.items() if a != "met") + ")")
    out += ["", f"Δ pt: test accuracy minus the baseline's, on the same {r['test_samples']} rows; ± is the half-width of its paired "
            "95% interval (McNemar variance). Deltas inside it are not distinguishable from zero on this test split.",
            "", "Unstructured zeros leave every matrix its size: file MB and latency do not move; only a compressed "
            "file (gz column) shows them. Reproduce: `python benchmarks/pruning/run.py`.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
