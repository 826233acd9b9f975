"""Artifacts an app can ship: int8 file size, p50 and test accuracy of the default student per format (onnx, ptl,
pte), before and after the exporter changes (8-bit embedding tables in .ptl/.pte; eager attention and no-op expands
dropped in .pte), plus where the time goes: an op-group profile of the .pte (ExecuTorch ETDump) and of the .onnx
(onnxruntime's profiler).

- before: the int8 files of a default `edgecompress run` made at commit 153e925 (its artifacts folder, --before).
- after:  the same student exported here with this checkout's exporters (QuantSpec() with the host profile's int8
  flavour, exactly what the pipeline exports).
- p50: batch 1, seq 128 (mask all ones), 1 thread, OMP_WAIT_POLICY=PASSIVE, each file measured by what the product
  uses for it: .pte by the native runner (targets/native, edgecompress.device.native), .onnx and .ptl by the Python
  agent (edgecompress/device/agent.py); --rounds interleaved rounds, the table shows the median of the rounds' p50s.
- accuracy: all rows of the packaged VADER test split, each file run by its exporter's load() (the runtime that
  runs it on the device); label agreement is with the fp32 torch student.
- profile: --profile-runs forwards of each file at seq 128. .pte: ETDump of the Python runtime (the XNNPACK delegate
  is the same library as the native runner's; non-delegated ops run on the pybindings' kernels); .onnx:
  SessionOptions.enable_profiling. Per op group, ms per forward (sum of per-op medians for .pte, means for .onnx).

Reproduce (2-core x86_64 here; ~10 min):
    git checkout 153e925 && edgecompress run --out /tmp/before    # the "before" artifacts
    git checkout -  && python benchmarks/ship/run.py --before /tmp/before/default/artifacts
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch/onnxruntime load libgomp (DESIGN.md: threads)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_groups import onnx_profile, pte_profile  # noqa: E402

HERE = Path(__file__).resolve().parent
SEQ, THREADS = 128, 1
FORMATS = ("onnx", "ptl", "pte")
RUNTIME = {"onnx": "onnxruntime", "ptl": "lite_interpreter", "pte": "executorch"}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="artifacts folder of the run at commit 153e925")
    ap.add_argument("--student", type=Path, default=None, help="student model folder (default: <before>/2-prune/model)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    ap.add_argument("--runs", type=int, default=100, help="timed forwards per round")
    ap.add_argument("--profile-runs", type=int, default=50)
    ap.add_argument("--out", type=Path, default=HERE)
    return ap.parse_args(argv)


def load_student(student: Path):
    """(model, test batches, labels, fp32 predictions, IOSpec): the fp32 torch student and the full test split."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from edgecompress.data import EVAL_BATCH, batches, load_splits
    from edgecompress.export.base import IOSpec
    from edgecompress.modeling import load_tokenizer
    from edgecompress.recipe import DataCfg

    model = AutoModelForSequenceClassification.from_pretrained(str(student), local_files_only=True).eval()
    tok = load_tokenizer(student)
    test_b = [(x, y) for x, y, _ in batches(tok, load_splits(DataCfg())["test"], EVAL_BATCH, SEQ, shuffle=False,
                                            group_by_length=False)]
    labels = np.concatenate([y for _, y in test_b])
    with torch.no_grad():
        ref = np.concatenate([model(**{k: torch.from_numpy(v) for k, v in x.items()}).logits.argmax(-1).numpy()
                              for x, _ in test_b])
    io = IOSpec.for_model(model, tok, SEQ)
    return model, test_b, labels, ref, io


def export_after(model, io, fmt: str, dest: Path) -> dict:
    """Export `fmt` int8 as the pipeline does (QuantSpec with the host profile's flavour); notes and details."""
    from edgecompress.profiles import load_profile
    from edgecompress.recipe import QuantSpec
    from edgecompress.registry import EXPORTERS

    res = EXPORTERS.get(fmt)().export(model, io, QuantSpec().with_profile(load_profile("host").int8), None, dest)
    keep = ("embeddings_int8", "embedding_table", "attention", "delegate_calls", "non_delegated_ops", "kernel_ops",
            "lower_s", "export_s")
    return {"file": str(res.file), "notes": res.notes, "details": {k: v for k, v in res.details.items() if k in keep}}


def accuracy(fmt: str, path: Path, test_b, labels, ref) -> dict:
    from edgecompress.registry import EXPORTERS
    infer = EXPORTERS.get(fmt)().load(path, threads=THREADS)
    preds = np.concatenate([np.asarray(infer(x)).argmax(-1) for x, _ in test_b])
    return {"test_accuracy": round(float(np.mean(preds == labels)), 4),
            "label_agreement": round(float(np.mean(preds == ref)), 4)}


def runner_argv(fmt: str, bundle: Path) -> list[str]:
    """The product's runner for the format: native for .pte, the Python agent otherwise."""
    from edgecompress.device import native
    if fmt == "pte":
        return native.launch_argv(str(bundle))
    import importlib.util
    return [sys.executable, importlib.util.find_spec("edgecompress.device.agent").origin]


def p50_once(fmt: str, path: Path, bundle: Path, runs: int) -> float:
    argv = runner_argv(fmt, bundle) + [
        "--model", str(path), "--io", str(path.parent / "io.json"), "--runtime", RUNTIME[fmt], "--threads",
        str(THREADS), "--warmup-runs", "10", "--runs", str(runs), "--batch", "1", "--seq-len", str(SEQ)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    if not out.get("ok"):
        raise SystemExit(f"{fmt} {path}: {out.get('error')}")
    return float(out["p50_ms"])


def latencies(files: dict, bundle: Path, rounds: int, runs: int) -> dict:
    """{name: [p50 per round]}: every file once per round, round-robin, so all see the same CPU weather."""
    out = {name: [] for name in files}
    for r in range(rounds):
        for name, (fmt, path) in files.items():
            out[name].append(round(p50_once(fmt, path, bundle, runs), 3))
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {v[-1]}" for n, v in out.items()), flush=True)
    return out


def main(argv=None) -> None:
    import torch
    from edgecompress.device import native
    from edgecompress.export.base import file_mb

    args = parse_args(argv)
    torch.set_num_threads(THREADS)
    before = args.before.resolve()
    student = args.student or before / "2-prune" / "model"
    model, test_b, labels, ref, io = load_student(student)
    fp32_acc = float(np.mean(ref == labels))
    tmp = Path(tempfile.mkdtemp(prefix="shipbench."))
    files, rows = {}, {}
    for fmt in FORMATS:
        path = before / f"{fmt}-int8" / f"model.{fmt}"
        meta = json.loads((path.parent / "manifest.json").read_text())["metrics"]
        files[f"{fmt}-before"] = (fmt, path)
        rows[f"{fmt}-before"] = {"format": fmt, "file": str(path), "notes": meta.get("notes", []),
                                 "details": {k: v for k, v in meta.get("details", {}).items()
                                             if k in ("delegate_calls", "non_delegated_ops", "embeddings_int8")}}
    for fmt in FORMATS:
        out = export_after(model, io, fmt, tmp / fmt)
        files[f"{fmt}-after"] = (fmt, Path(out["file"]))
        rows[f"{fmt}-after"] = {"format": fmt, **out}
        print(f"exported {fmt}-after", flush=True)
    for name, (fmt, path) in files.items():
        rows[name].update(file_mb=file_mb(path), **accuracy(fmt, path, test_b, labels, ref))
        rows[name]["delta_pt_vs_fp32"] = round(100 * (rows[name]["test_accuracy"] - fp32_acc), 2)
    bundle = native.build_runner()
    lat = latencies(files, bundle, args.rounds, args.runs)
    for name, v in lat.items():
        rows[name].update(p50_ms=round(statistics.median(v), 2), p50_rounds_ms=v)
    profiles = {"pte-before": pte_profile(files["pte-before"][1], args.profile_runs, SEQ),
                "pte-after": pte_profile(files["pte-after"][1], args.profile_runs, SEQ),
                "onnx-after": onnx_profile(files["onnx-after"][1], args.profile_runs, SEQ)}
    parents = {name: json.loads((path.parent / "manifest.json").read_text()).get("parents", [])
               for name, (_, path) in files.items() if name.endswith("before")}
    results = {"student": str(student), "student_artifact": parents["pte-before"][0] if parents["pte-before"] else None,
               "fp32_torch_test_accuracy": round(fp32_acc, 4), "test_rows": int(len(labels)),
               "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "threads": THREADS, "OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"],
                           "torch": torch.__version__, "executorch": native.executorch_version()},
               "command": "python benchmarks/ship/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "rows": rows, "profiles": profiles}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    from report import write_markdown
    write_markdown(results, args.out / "results.md")
    print(f"wrote {args.out / 'results.md'}")


if __name__ == "__main__":
    main()
