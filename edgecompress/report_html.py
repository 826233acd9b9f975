"""report.html: one self-contained page (the plot is an inline PNG) that opens anywhere, offline."""
from __future__ import annotations

import base64
import html
import io


def pareto_png(rows: list[dict]) -> bytes:
    """Accuracy vs p50 latency, marker area proportional to file size; the teacher and every artifact."""
    import matplotlib
    matplotlib.use("Agg")  # no display on CI or a headless box
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.get("p50_ms") is not None and r.get("test_accuracy") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    if pts:
        big = max(r["file_mb"] for r in pts) or 1.0
        for i, r in enumerate(sorted(pts, key=lambda r: (r["p50_ms"], r["test_accuracy"]))):
            teacher = r["label"].startswith("teacher")
            ax.scatter(r["p50_ms"], r["test_accuracy"], s=60 + 1400 * r["file_mb"] / big, alpha=0.55,
                       color="tab:red" if teacher else "tab:blue", edgecolors="black", linewidths=0.6)
            ax.annotate(f"{r['label']}\n{r['file_mb']:.1f} MB", (r["p50_ms"], r["test_accuracy"]),
                        # alternate above/below so neighbouring int8 points do not print over each other
                        textcoords="offset points", xytext=(10, 8 if i % 2 == 0 else -22), fontsize=8)
        xs = [r["p50_ms"] for r in pts]
        ax.set_xlim(0, max(xs) * 1.35)
        accs = [r["test_accuracy"] for r in pts]
        pad = max(0.01, (max(accs) - min(accs)) * 0.4)
        ax.set_ylim(min(accs) - pad, max(accs) + pad)
    ax.set_xlabel("p50 latency (ms, batch 1) — lower is better")
    ax.set_ylabel("test accuracy — higher is better")
    ax.set_title("Accuracy vs latency (marker size = file MB)")
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes (laid out, then closed)."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def table(headers: list[str], rows: list[list]) -> str:
    esc = lambda x: html.escape("—" if x is None else str(x))  # noqa: E731
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(x, f="{:.2f}"):
    return None if x is None else f.format(x)


def classes(report: dict) -> tuple[str, list[str], list[list]]:
    """The class names as one line, and a per-artifact table of test accuracy per class (recall), for md and html."""
    names = report.get("labels") or []
    line = "Classes: " + ", ".join(f"{i} = {n}" for i, n in enumerate(names)) + "." if names else ""
    rows = [[r["label"]] + [_fmt(r["test_accuracy_by_class"].get(n), "{:.4f}") or "—" for n in names]
            for r in report["rows"] if r.get("test_accuracy_by_class")]
    return line, ["artifact"] + [f"{n} acc" for n in names], rows


def to_html(report: dict, png: bytes) -> str:
    rec = report["recipe"]
    rows = [[r["label"], r["runtime"], _fmt(r["test_accuracy"], "{:.4f}"), _fmt(r.get("accuracy_vs_teacher"), "{:.1%}"),
             _fmt(r.get("p50_ms")), _fmt(r.get("p90_ms")), _fmt(r.get("load_ms"), "{:.0f}"),
             _fmt(r.get("peak_rss_mb"), "{:.0f}"), _fmt(r["file_mb"]), _fmt(r["parity_max_abs_diff"], "{:.2e}")]
            for r in report["rows"]]
    lineage = [[s["label"], s["step"], s["id"], ", ".join(s["parents"]) or "—", _fmt(s.get("duration_s"), "{:.1f}")]
               for s in report["lineage"]]
    versions = [[k, v] for k, v in report["versions"].items()]
    m = report["machine"]
    extra = ""
    if report["failures"]:
        extra += "<h2>Failures</h2><ul>" + "".join(f"<li>{html.escape(f['label'])}: {html.escape(f['error'])}</li>"
                                                    for f in report["failures"]) + "</ul>"
    if report["budget_violations"]:
        extra += "<h2>Budgets missed</h2><ul>" + "".join(f"<li>{html.escape(v)}</li>" for v in report["budget_violations"]) + "</ul>"
    line, header, per_class = classes(report)
    if line:
        extra += f"<h2>Classes</h2><p>{html.escape(line)}</p>" + (table(header, per_class) if per_class else "")
    notes = [f"{r['label']}: {n}" for r in report["rows"] for n in r.get("notes", [])]
    if notes:
        extra += "<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgecompress report: {html.escape(rec['name'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}
th{{background:#f3f3f3}}img{{max-width:100%}}</style></head><body>
<h1>edgecompress report: {html.escape(rec['name'])}</h1>
<p>Machine: {html.escape(str(m['cpu']))}, {m['cores']} cores, {html.escape(str(m['arch']))}. Bench: batch {rec['bench']['batch']},
seq {rec['bench']['seq_len']}, {rec['bench']['threads']} thread(s), {rec['bench']['runs']} runs after {rec['bench']['warmup_runs']} warmup.
Run took {report['run_seconds']} s.</p>
<img id="pareto" alt="accuracy vs p50 latency, marker size = file MB" src="data:image/png;base64,{base64.b64encode(png).decode()}">
<h2>Artifacts</h2>
{table(["artifact", "runtime", "test acc", "% of teacher", "p50 ms", "p90 ms", "load ms", "peak RSS MB", "file MB", "parity max|Δ|"], rows)}
{extra}
<h2>Stages and lineage</h2>
{table(["step label", "step", "artifact id", "parents", "seconds"], lineage)}
<h2>Versions</h2>
{table(["package", "version"], versions)}
</body></html>
"""
