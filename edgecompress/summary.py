"""The last screen of `edgecompress run`: one table of what was made, the best file marked, where the files are and
what to type next. The whole report stays in report.md/html/json; a terminal is for deciding what to do next."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional, TextIO

from edgecompress.graph import BASELINE
from edgecompress.report import MIN_LABEL_AGREEMENT, bytes_line, fmt_value, teacher_cosine
from edgecompress.retrieval import AGREEING_COSINE

# A wide table wrapped at 80 columns by a pipe or CI log is unreadable; 120 keeps one row per line there.
PIPE_WIDTH = 120
EXAMPLE_TEXT = "what a wonderful, moving film"


def _embedding(report: dict) -> bool:
    return report["recipe"].get("task") == "embedding"


def _table(report: dict):
    from rich import box
    from rich.table import Table
    # What a file keeps of the teacher: accuracy for a classifier, the teacher's neighbours for an embedder.
    quality = (("recall@10", "recall_at_10", "{:.3f}"), ("cos to teacher", "cosine_to_teacher_mean", "{:.3f}")) \
        if _embedding(report) else (("test acc", "test_accuracy", "{:.4f}"), ("% of teacher", "accuracy_vs_teacher",
                                                                               "{:.1%}"))
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for name in ("", "file", "runner", quality[0][0], quality[1][0], "p50 ms", "speed-up", "MiB", "smaller",
                 "peak RSS MiB", "verifies"):
        t.add_column(name, justify="left" if name in ("", "file", "runner") else "right", no_wrap=True)
    for r in report["rows"]:
        base = r["label"] == BASELINE
        best = r["label"] == report.get("best")
        t.add_row("★" if best else "", r["label"], r.get("runner", "python"), fmt_value(r.get(quality[0][1]), quality[0][2]),
                  teacher_cosine(r) if _embedding(report) else fmt_value(r.get(quality[1][1]), quality[1][2]),
                  fmt_value(r.get("p50_ms")),
                  fmt_value(r.get("speedup_vs_teacher"), "{:.2f}×"), fmt_value(r.get("file_mb")),
                  fmt_value(r.get("size_ratio_vs_teacher"), "{:.1f}×"), fmt_value(r.get("peak_rss_mb"), "{:.0f}"),
                  "baseline" if base else ("yes" if r.get("verified") else "no"),
                  style="bold green" if best else ("dim" if base else None))
    for f in report["failures"]:
        t.add_row("", f["label"], "", "", "", "", "", "", "", "", "failed", style="red")
    return t


def _pick(report: dict) -> Optional[dict]:
    """The row the next commands use: the best, else the fastest student file, so the commands still run."""
    rows = {r["label"]: r for r in report["rows"]}
    if report.get("best"):
        return rows[report["best"]]
    students = [r for r in report["rows"] if r["label"] != BASELINE and r.get("p50_ms") is not None]
    return min(students, key=lambda r: r["p50_ms"]) if students else None


def _device_profile(report: dict) -> str:
    """The run's own profile when it names a device; `host` is this machine, so a board stands in as the example."""
    prof = str(report["recipe"].get("profile") or "host")
    return "rpi4" if prof == "host" else prof


def lines(report: dict, run_dir: Path) -> list[str]:
    """What follows the table, as plain lines (paths unwrapped, so they copy and paste whole)."""
    out: list[str] = []
    pick = _pick(report)
    faithful = (f">= {MIN_LABEL_AGREEMENT:.0%} of its test vectors at cosine >= {AGREEING_COSINE} to its torch "
                f"model's" if _embedding(report) else
                f"agreeing with its torch model on >= {MIN_LABEL_AGREEMENT:.0%} of test labels")
    rule = f"within profile {report.get('profile', '?')}'s budgets, accuracy drop included, and {faithful}"
    if report.get("best"):
        out.append(f"★ best: {report['best']}, the fastest file that verifies: {rule}")
    else:
        out.append(f"No file verifies ({rule}); see 'Budgets missed' in report.md")
    for f in report["failures"]:
        out.append(f"FAILED {f['label']}: {f['error']}")
    out += ["", f"report:  {run_dir / 'report.html'}  (also report.md, report.json; messages: run.log)"]
    if pick is not None:
        bundle = run_dir / "artifacts" / pick["label"]
        out += ([f"bundle:  {bundle}  (model, tokenizer.json, README.txt)"] if _embedding(report) else
                [f"bundle:  {bundle}  (model, tokenizer.json, labels.json, README.txt)",
                 f"classes: {', '.join(report.get('labels') or [])}"])
        if (where := bytes_line(pick)) is not None:
            out.append(f"bytes:   {where}")
        out += ["", "next:", f"  edgecompress predict {shlex.quote(str(bundle))} {shlex.quote(EXAMPLE_TEXT)}"
                + (" --json" if _embedding(report) else ""),
                f"  edgecompress bench {shlex.quote(str(bundle))} --profile {shlex.quote(_device_profile(report))} "
                f"--target ssh://user@host"]
    return out


def print_summary(report: dict, run_dir: Path, quiet: bool = False, file: TextIO = None) -> None:
    """The table and what follows it; `quiet`: the verdict and the report's path only."""
    file = file or sys.stdout
    after = lines(report, run_dir)
    if quiet:
        print(after[0], file=file)
        print(f"report: {run_dir / 'report.html'}", file=file)
        return
    from rich.console import Console
    console = Console(file=file, width=None if file.isatty() else PIPE_WIDTH, highlight=False)
    n = sum(r["label"] != BASELINE for r in report["rows"])
    console.print(f"edgecompress run {report['recipe']['name']}: {n} file(s) in {report['run_seconds']:.0f} s, "
                  f"compared with the fp32 teacher ({BASELINE})", markup=False, soft_wrap=True)
    console.print(_table(report))
    for line in after:
        console.print(line, markup=False, soft_wrap=True)
