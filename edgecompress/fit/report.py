"""fit/<name>/report.{json,md,html} and the frontier plot: every candidate, what it measured, and why it lost. The
score columns are the task's (tasks.TaskSpec: its metric on the final file, its validation score)."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from edgecompress.device.protocol import EMULATION_SKEWED

def cols(task) -> tuple[str, ...]:
    return ("name", "status", "gflops", "params", "p90_ms", "file_mb", "peak_rss_mb", "load_ms", task.score.val,
            task.metric, "why")


def teacher_key(task) -> str:
    """The report's key for the teacher's reference score: teacher_accuracy, teacher_recall_at_10."""
    return "teacher_" + task.metric.removeprefix("test_")


def frontier_png(doc: dict, task) -> bytes:
    """Left: the task's score vs p90 of the trained candidates (and the teacher's), budget line. Right: every
    measured candidate's p90 vs file size, budget lines; marker size = file MiB."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows, budgets, metric, ref = doc["rows"], doc["budgets"], task.metric, teacher_key(task)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100)
    trained = [r for r in rows if r.get(metric) is not None and r.get("final_p90_ms") is not None]
    for r in trained:
        win = r["name"] == doc.get("winner")
        a1.scatter(r["final_p90_ms"], r[metric], s=60 + 60 * r["final_file_mb"],
                   color="tab:green" if win else "tab:blue", edgecolors="black", alpha=0.7)
        a1.annotate(r["name"], (r["final_p90_ms"], r[metric]), textcoords="offset points", xytext=(6, 6),
                    fontsize=7)
    if doc.get(ref):
        a1.axhline(doc[ref], color="tab:red", ls=":", label=ref.replace("_", " "))
    measured = [r for r in rows if r.get("p90_ms") is not None]
    shapes = dict(zip(sorted({r["format"] for r in measured}), "osD^v<>"))
    for r in measured:  # grey: over a budget as measured; green: within every budget; black edge: the winner
        a2.scatter(r["p90_ms"], r["file_mb"], s=20 + 20 * r["file_mb"], alpha=0.6, marker=shapes[r["format"]],
                   color="tab:gray" if r["status"] == "over budget" else "tab:green",
                   edgecolors="black" if r["name"] == doc.get("winner") else "none")
    for fmt, m in shapes.items():
        a2.scatter([], [], marker=m, color="tab:green", label=fmt)
    for ax in (a1, a2):
        if "p90_ms" in budgets:
            ax.axvline(budgets["p90_ms"], color="tab:red", ls="--", label="p90 budget")
        ax.set_xlabel("p90 latency on the target (ms)" + (" — emulated" if doc.get("emulated") else ""))
        ax.grid(alpha=0.3)
    if "file_mb" in budgets:
        a2.axhline(budgets["file_mb"], color="tab:orange", ls="--", label="file budget")
    a1.set_ylabel(f"{task.score.name} (trained)")
    a2.set_ylabel("file MiB (untrained candidates, int8)")
    a1.set_title("trained candidates (marker size = file)")
    a2.set_title("measured candidates")
    for ax in (a1, a2):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    from edgecompress.report_html import png_bytes
    return png_bytes(fig)


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def to_markdown(doc: dict, task) -> str:
    b = " ".join(f"{k}={v:g}" for k, v in doc["budgets"].items())
    lines = [f"# edgecompress fit: {doc['name']}", "",
             f"Budgets on {doc['target']} (profile {doc['profile']}): {b}."
             + (f" The target is emulated: {', '.join(EMULATION_SKEWED)} are not judged there."
                if doc.get("emulated") else ""), "",
             f"Result: **{doc['verdict']}**", "",
             "Phases: " + ", ".join(f"{k} {v:.0f} s" for k, v in doc["phases_s"].items())
             + f". Candidates: {len(doc['rows'])}: {sum(bool(r.get('measured')) for r in doc['rows'])} measured, "
             f"{sum(r['status'] == 'skipped' for r in doc['rows'])} skipped (larger than one over budget, or by the "
             f"cost model), {sum(bool(r.get('inferred_from')) for r in doc['rows'])} judged to fit without measuring "
             f"(no larger than one that fits). The winner is the {task.score.best} on the validation split. "
             f"Cost model held-out error: "
             + ", ".join(f"{k} {v['mean_rel_err']:.1%} (n={v['n']})" for k, v in doc["cost_model"].items()
                         if v.get("mean_rel_err") is not None) + ".", "",
             "| " + " | ".join(cols(task)) + " |", "|" + "---|" * len(cols(task))]
    for r in doc["rows"]:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in cols(task)) + " |")
    return "\n".join(lines) + "\n"


def write(doc: dict, out_dir: Path, task) -> None:
    """task: the recipe's tasks.TaskSpec (which scores the columns and the plot show)."""
    from edgecompress.report_html import table
    out_dir.mkdir(parents=True, exist_ok=True)
    png = frontier_png(doc, task)
    (out_dir / "report.json").write_text(json.dumps(doc, indent=2, default=str))
    md = to_markdown(doc, task)
    (out_dir / "report.md").write_text(md)
    (out_dir / "frontier.png").write_bytes(png)
    rows = [[_cell(r.get(c)) for c in cols(task)] for r in doc["rows"]]
    (out_dir / "report.html").write_text(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>edgecompress fit: {html.escape(doc['name'])}</title><style>body{{font-family:system-ui,sans-serif;margin:2em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 6px}}img{{max-width:100%}}</style></head>
<body><h1>edgecompress fit: {html.escape(doc['name'])}</h1><p>{html.escape(doc['verdict'])}</p>
<img id="frontier" alt="{html.escape(task.score.name)} vs p90, budget lines" src="data:image/png;base64,{base64.b64encode(png).decode()}">
{table(list(cols(task)), rows)}</body></html>
""")
