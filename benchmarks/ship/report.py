"""results.json -> results.md for benchmarks/ship/run.py."""
from __future__ import annotations

from pathlib import Path

ORDER = ("onnx-before", "onnx-after", "ptl-before", "ptl-after", "pte-before", "pte-after")


def _files_table(res: dict) -> list[str]:
    rows = res["rows"]
    onnx = rows["onnx-after"]
    lines = ["| file | MiB | x onnx-int8 MiB | p50 ms | x onnx-int8 p50 | test acc | Δ pt vs fp32 | Δ pt vs before "
             "| label agreement |", "|---|---|---|---|---|---|---|---|---|"]
    for name in ORDER:
        r = rows[name]
        before = rows[name.replace("after", "before")]
        lines.append(f"| {name} | {r['file_mb']:.2f} | {r['file_mb'] / onnx['file_mb']:.2f} | {r['p50_ms']:.2f} | "
                     f"{r['p50_ms'] / onnx['p50_ms']:.2f} | {r['test_accuracy']:.4f} | {r['delta_pt_vs_fp32']:+.2f} | "
                     f"{100 * (r['test_accuracy'] - before['test_accuracy']):+.2f} | {r['label_agreement']:.4f} |")
    return lines


def _targets(res: dict) -> list[str]:
    """The issue's bars for the after files: size and p50 against the .onnx int8 file, accuracy against before."""
    rows = res["rows"]
    onnx = rows["onnx-after"]
    checks = []
    for fmt in ("ptl", "pte"):
        r, b = rows[f"{fmt}-after"], rows[f"{fmt}-before"]
        checks.append((f"{fmt} MiB <= 1.2x onnx-int8", r["file_mb"] / onnx["file_mb"], 1.2))
        change = abs(100 * (r["test_accuracy"] - b["test_accuracy"]))
        checks.append((f"{fmt} accuracy change vs before, abs pt", change, 0.3))
    checks.append(("pte p50 <= 1.25x onnx-int8 p50", rows["pte-after"]["p50_ms"] / onnx["p50_ms"], 1.25))
    return ["| bar | measured | limit | met |", "|---|---|---|---|"] + [
        f"| {name} | {value:.2f} | {limit} | {'yes' if value <= limit else '**no**'} |"
        for name, value, limit in checks]


def _profile_table(res: dict) -> list[str]:
    profs = res["profiles"]
    names = list(profs)
    groups: list[str] = []
    for p in profs.values():
        groups += [g for g in p["groups_ms"] if g not in groups]
    lines = ["| op group | " + " | ".join(f"{n} ms" for n in names) + " |", "|---|" + "---|" * len(names)]
    for g in groups:
        lines.append(f"| {g} | " + " | ".join(f"{profs[n]['groups_ms'].get(g, 0.0):.3f}" for n in names) + " |")
    lines.append("| **total (profiled forward)** | " + " | ".join(f"**{profs[n]['total_ms']:.3f}**" for n in names)
                 + " |")
    return lines


def write_markdown(res: dict, out: Path) -> None:
    m = res["machine"]
    rows = res["rows"]
    lines = ["# Artifacts an app can ship: int8 per format, before / after (default student)", "",
             f"Student `{res['student']}` (artifact {res.get('student_artifact')}); fp32 torch test accuracy "
             f"**{res['fp32_torch_test_accuracy']:.4f}** on "
             f"{res['test_rows']} VADER test rows. Batch 1, seq 128, {m['threads']} thread, OMP_WAIT_POLICY="
             f"{m['OMP_WAIT_POLICY']}, {m['cores']}-core {m['cpu']} shared with other jobs; torch {m['torch']}, "
             f"executorch {m['executorch']}. p50: .pte by the native runner, .onnx/.ptl by the Python agent, "
             f"median of interleaved rounds (per-round p50s in results.json). before = commit 153e925's default run; "
             f"after = this checkout's exporters.", "",
             f"Reproduce: `{res['command']}`", "", *_files_table(res), "", *_targets(res), "",
             "## Where the time goes (one forward, seq 128, 1 thread)", "",
             "ExecuTorch: ETDump in the Python runtime (XNNPACK ops as the delegate reports them, non-delegated ops "
             "on the pybindings' kernels). onnxruntime: its profiler (profiling itself adds time per node). "
             "overhead = the method / run total minus the ops' sum.", "", *_profile_table(res), ""]
    for name in ("pte-before", "pte-after"):
        d = rows[name].get("details", {})
        if d.get("non_delegated_ops") is not None:
            ops = [o.split(">")[0].removeprefix("<EdgeOpOverload: ") for o in d["non_delegated_ops"]]
            lines.append(f"- **{name}**: {d.get('delegate_calls')} XNNPACK delegate calls; not delegated: "
                         f"{', '.join(ops)}")
    lines += ["", "Notes per file (from the export):", ""]
    for name in ORDER:
        lines.append(f"- **{name}**: " + "; ".join(rows[name].get("notes", [])))
    Path(out).write_text("\n".join(lines) + "\n")
