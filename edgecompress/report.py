"""report.json + report.md in the run folder: one row per exported file, the fp32 teacher ONNX as baseline."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Optional

from edgecompress.artifact import versions
from edgecompress.graph import BASELINE
from edgecompress.retrieval import RESCORE



def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# A file "verifies" when it meets every budget the run's profile sets for it (the accuracy drop vs the teacher row
# included) and its outputs agree with its own torch model's on at least this share of the test rows: below that the
# file computes something other than what was trained, whatever its accuracy happens to be. A classifier's row
# agrees when the labels are equal, an embedding's when the vectors are at cosine >= retrieval.AGREEING_COSINE.
MIN_LABEL_AGREEMENT = 0.98


def judge_rows(runner, rows: list[dict]) -> list[str]:
    """Sets each student row's `verified`; returns every budget miss as a line."""
    from edgecompress.bench.budget import check_budgets
    teacher_acc = next((r["test_accuracy"] for r in rows if r["label"] == BASELINE), None)
    out = []
    for r in rows:
        if r["label"] == BASELINE:
            continue
        res = dict(r)
        if teacher_acc is not None and r.get("test_accuracy") is not None:
            res["accuracy_drop"] = teacher_acc - r["test_accuracy"]
        misses = [c.message for c in check_budgets(res, runner.plan.profile, f"{r['format']}-{r['precision']}")]
        agree = next((r[k] for k in ("label_agreement_vs_torch", "vector_agreement_vs_torch") if r.get(k) is not None),
                     None)
        faithful = agree is not None and agree >= MIN_LABEL_AGREEMENT
        r["verified"] = not misses and faithful
        out += misses
    return out


def best_row(rows: list[dict]) -> Optional[dict]:
    """The fastest (model-only p50) file that verifies; None when none does."""
    ok = [r for r in rows if r.get("verified") and r.get("p50_ms") is not None]
    return min(ok, key=lambda r: r["p50_ms"]) if ok else None


def build_report(runner, teacher_art, student_art, rows: list[dict], failures: list[dict], seconds: float) -> dict:
    base = next((r for r in rows if r["label"] == BASELINE), None)
    for r in rows:
        if base:
            r["accuracy_vs_teacher"] = r["test_accuracy"] / base["test_accuracy"] \
                if base.get("test_accuracy") and r.get("test_accuracy") is not None else None
            r["speedup_vs_teacher"] = base["p50_ms"] / r["p50_ms"] if r.get("p50_ms") else None
            r["size_ratio_vs_teacher"] = base["file_mb"] / r["file_mb"] if r.get("file_mb") else None
    violations = judge_rows(runner, rows)
    best = best_row(rows)
    return {
        "recipe": runner.recipe.model_dump(mode="json"),
        "run_seconds": round(seconds, 1),
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "arch": platform.machine(),
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "versions": versions(),
        "teacher": {"id": teacher_art.id, **{k: v for k, v in teacher_art.metrics.items() if k != "history"}},
        "student": {"id": student_art.id, **{k: v for k, v in student_art.metrics.items() if k != "history"}},
        "labels": list(runner.plan.splits["train"].label_names),  # class i is labels[i], as in every labels.json
        "rows": rows,
        "failures": failures,
        "budget_violations": violations,
        "best": best["label"] if best else None,
        "profile": runner.plan.profile.name,
        "lineage": runner.lineage,
    }


def fmt_value(x, fmt="{:.2f}") -> str:
    """A number for a table cell, or a dash where there is none."""
    return "—" if x is None else fmt.format(x)


def teacher_cosine(row: dict) -> str:
    """An embedding row's cosine to the teacher: to its own vectors at equal width, else (embedding.dim) to them
    through the PCA map, marked as such: the two are not the same number."""
    if row.get("cosine_to_teacher_mean") is None and row.get("cosine_to_pca_teacher_mean") is not None:
        return f"{row['cosine_to_pca_teacher_mean']:.3f} (PCA)"
    return fmt_value(row.get("cosine_to_teacher_mean"), "{:.3f}")


def to_markdown(report: dict) -> str:
    rec = report["recipe"]
    lines = [f"# edgecompress report: {rec['name']}", "",
             f"Machine: {report['machine']['cpu']} ({report['machine']['cores']} cores, {report['machine']['arch']}); "
             f"bench: batch {rec['bench']['batch']}, seq {rec['bench']['seq_len']}, {rec['bench']['threads']} thread(s), "
             f"{rec['bench']['runs']} runs after {rec['bench']['warmup_runs']} warmup; run took {report['run_seconds']} s.", ""]
    if rec.get("task") == "embedding":
        return "\n".join(lines + embedding_table(report) + _tail(report)) + "\n"
    lines += ["| artifact | runtime | runner | test acc | % of teacher | p50 ms | p90 ms | text→label p50 ms | speedup | "
             "load ms | peak RSS MiB | file MiB | smaller | parity max|Δ| | label agree |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(
            f"| {r['label']} | {r['runtime']} | {r.get('runner', 'python')} | {r['test_accuracy']:.4f} | "
            f"{fmt_value(r.get('accuracy_vs_teacher'), '{:.1%}')} | {fmt_value(r.get('p50_ms'))} | {fmt_value(r.get('p90_ms'))} | "
            f"{fmt_value(r.get('e2e_p50_ms'))} | {fmt_value(r.get('speedup_vs_teacher'), '{:.2f}x')} | "
            f"{fmt_value(r.get('load_ms'), '{:.0f}')} | {fmt_value(r.get('peak_rss_mb'), '{:.0f}')} | {r['file_mb']:.2f} | "
            f"{fmt_value(r.get('size_ratio_vs_teacher'), '{:.1f}x')} | {r['parity_max_abs_diff']:.2e} | "
            f"{fmt_value(r.get('label_agreement_vs_torch'), '{:.4f}')} |")
    if report.get("best"):
        lines += ["", f"Best: **{report['best']}**, the fastest file that verifies (meets profile "
                  f"{report.get('profile')}'s budgets, accuracy drop included, and agrees with its torch model on "
                  f">= {MIN_LABEL_AGREEMENT:.0%} of test labels)."]
    t, s = report["teacher"], report["student"]
    lines += ["", "text→label: tokenize (the bundle's tokenizer.json) + infer, per real test sentence at its own "
              "length (most are far shorter than the bench's seq), measured by the Python agent; the native runner "
              "measures the model alone. peak RSS of a python row includes the interpreter and the runtime's Python "
              "bindings."]
    lines += ["", f"Teacher (torch fp32): test acc {fmt_value(t.get('test_accuracy'), '{:.4f}')}; "
              f"student after compression (torch fp32): test acc {fmt_value(s.get('test_accuracy'), '{:.4f}')}"
              + (f", sparsity {s['sparsity']:.3f}" if "sparsity" in s else "") + "."]
    lines += _classes_markdown(report)
    return "\n".join(lines + _tail(report)) + "\n"


def embedding_table(report: dict) -> list[str]:
    """task: embedding: per file, what it keeps of the teacher's retrieval, beside its speed and size."""
    lines = ["| artifact | runtime | runner | dim | recall@10 of teacher's neighbours | int8 / binary index | cos to "
             "teacher | kNN label (teacher) | kNN domain (teacher) | rows agreeing with torch (min cos) | p50 ms | "
             "speedup | peak RSS MiB | file MiB | smaller |", "|---" * 15 + "|"]
    for r in report["rows"]:
        lines.append(
            f"| {r['label']} | {r['runtime']} | {r.get('runner', 'python')} | {r.get('dim', '—')} | "
            f"{fmt_value(r.get('recall_at_10'), '{:.3f}')} | {fmt_value(r.get('index_int8_recall_at_10'), '{:.3f}')} / "
            f"{fmt_value(r.get('index_binary_rescored_recall_at_10'), '{:.3f}')} | {teacher_cosine(r)} | "
            f"{fmt_value(r.get('knn_label_accuracy'), '{:.3f}')} ({fmt_value(r.get('teacher_knn_label_accuracy'), '{:.3f}')}) | "
            f"{fmt_value(r.get('knn_domain_accuracy'), '{:.3f}')} ({fmt_value(r.get('teacher_knn_domain_accuracy'), '{:.3f}')}) | "
            f"{fmt_value(r.get('vector_agreement_vs_torch'), '{:.1%}')} "
            f"({fmt_value(r.get('cosine_to_torch_min'), '{:.3f}')}) | {fmt_value(r.get('p50_ms'))} | "
            f"{fmt_value(r.get('speedup_vs_teacher'), '{:.2f}x')} | {fmt_value(r.get('peak_rss_mb'), '{:.0f}')} | "
            f"{r['file_mb']:.2f} | {fmt_value(r.get('size_ratio_vs_teacher'), '{:.1f}x')} |")
    s = report["student"]
    return lines + ["", "recall@10: of the teacher's ten nearest test sentences (leave-one-out, cosine), the share "
                    "among the file's ten; int8 / binary index: the same with the file's corpus vectors stored in "
                    f"int8 (a scale per dimension) / in sign bits, the top {RESCORE * 10} by Hamming distance "
                    "re-ranked against the int8 vectors (queries in float); kNN: leave-one-out 10-NN vote of the "
                    "label/domain, the teacher's own in brackets; (PCA): an embedding.dim file's cosine to the teacher's vectors through the PCA "
                    "map. Student after compression (torch fp32): cos to teacher on test "
                    f"{fmt_value(s.get('test_cosine_to_teacher'), '{:.4f}')}."]


MIB = 2 ** 20


def bytes_line(r: dict) -> str | None:
    """Where a file's bytes go: its word-embedding table (as stored) and the rest (encoder, head, other tables)."""
    fb, table = r.get("file_bytes") or {}, r.get("embedding_table") or {}
    if "embedding_table" not in fb:
        return None
    per = ("one scale for the table" if table.get("scheme", "").startswith("per-tensor")  # onnx's 8-bit Gather
           else f"a scale per {table['group_size']} values" if table["group_size"] < table["dim"] else "a scale per row")
    return (f"{fb['file'] / MIB:.2f} MiB = word embeddings {fb['embedding_table'] / MIB:.2f} MiB ({table['rows']:,} x "
            f"{table['dim']}, {table['bits']}-bit, {per}) + the rest {fb['rest'] / MIB:.2f} MiB")


def _tail(report: dict) -> list[str]:
    lines: list[str] = []
    sizes = [(r["label"], bytes_line(r)) for r in report["rows"]]
    if any(line for _, line in sizes):
        lines += ["", "## Where the bytes go"] + [f"- {label}: {line}" for label, line in sizes if line]
    notes = [(r["label"], n) for r in report["rows"] for n in r.get("notes", [])]
    if notes:
        lines += ["", "## Notes"] + [f"- {label}: {n}" for label, n in notes]
    if report["failures"]:
        lines += ["", "## Failures"] + [f"- {f['label']}: {f['error']}" for f in report["failures"]]
    if report["budget_violations"]:
        lines += ["", "## Budgets missed"] + [f"- {v}" for v in report["budget_violations"]]
    lines += ["", "## Steps", "", "| step | artifact | seconds |", "|---|---|---|"]
    lines += [f"| {s['label']} | {Path(s['path']).name} | {fmt_value(s.get('duration_s'), '{:.1f}')} |" for s in report["lineage"]]
    return lines


def _classes_markdown(report: dict) -> list[str]:
    from edgecompress.report_html import classes
    line, header, rows = classes(report)
    out = ["", line] if line else []
    if rows:
        out += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def write_report(report: dict, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    # Written to temp names and renamed: a reader never sees half a report.
    from edgecompress.report_html import pareto_png, to_html
    png = pareto_png(report["rows"])
    for name, text in (("report.json", json.dumps(report, indent=2, default=str)), ("report.md", to_markdown(report)),
                       ("report.html", to_html(report, png))):
        tmp = run_dir / f".{name}.{os.getpid()}.tmp"  # per process: two runs of one recipe may finish together
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(run_dir / name)
    tmp = run_dir / f".pareto.png.{os.getpid()}.tmp"
    tmp.write_bytes(png)
    tmp.replace(run_dir / "pareto.png")
