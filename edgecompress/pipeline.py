"""Runs a plan: executes its step graph (teacher -> compress chain -> export fan-out with parity/accuracy in each
runtime -> bench) through the engine, then writes the report.

Every step is an artifact in the content-addressed store ($EDGECOMPRESS_HOME/store, default
~/.cache/edgecompress/store), so a finished step is never recomputed and a killed run resumes; the run
folder (<out>/<recipe name>/) links to the artifacts it used and holds the report. The graph itself is the plan's
(graph.py, printed by `plan --json`); what each node builds is in steps.py; the store, locks and rank sync in
engine.py.
"""
from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path
from typing import Optional

from edgecompress import progress
from edgecompress.artifact import Artifact
from edgecompress.engine import Engine, process_group
from edgecompress.errors import EdgeCompressError, UserInputError
from edgecompress.paths import home
from edgecompress.plan import Plan, make_plan
from edgecompress.recipe import load_recipe
from edgecompress.steps import Session, json_default

# What verify measures of an embedding file (verification.verify_embedding_file), carried into the report's rows.
EMBEDDING_COLUMNS = ("recall_at_10", "cosine_to_teacher_mean", "cosine_to_pca_teacher_mean", "cosine_to_torch_mean",
                     "cosine_to_torch_min", "vector_agreement_vs_torch", "knn_label_accuracy",
                     "teacher_knn_label_accuracy", "knn_domain_accuracy", "teacher_knn_domain_accuracy", "dim",
                     "index_int8_recall_at_10", "index_binary_rescored_recall_at_10", "index_bytes_per_vector")


def _check_folder(folder: Path, what: str) -> None:
    """A folder the run will write into: refused before any work when it cannot be one."""
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                raise UserInputError(f"{what} {folder}: {p} is a file, not a folder; point {what} at a folder")
            if not os.access(p, os.W_OK):
                raise UserInputError(f"{what} {folder}: {p} is not writable; point {what} at a writable folder")
            return


class Runner:
    """One `edgecompress run` over a plan: every node of its graph, in order. A failure inside an export job (the
    export, its verification or its benchmark) is recorded and the other jobs go on; any other failure ends the run."""

    def __init__(self, plan: Plan, run_dir: Path, rebench: bool = False, debug: bool = False):
        self.plan, self.recipe, self.debug = plan, plan.recipe, debug
        self.run_dir = Path(run_dir)
        self.session = Session(plan, Engine(self.run_dir), rebench=rebench)

    @property
    def lineage(self) -> list[dict]:
        return self.session.engine.lineage

    def run(self) -> dict:
        t_start = time.perf_counter()
        failed: dict[str, dict] = {}
        for node in self.plan.graph:
            if node.job is None:
                self.session.artifact(node.label)
            elif node.job not in failed:
                try:
                    self.session.artifact(node.label)
                except Exception as e:  # noqa: BLE001 - one format failing must not lose the others
                    failed[node.job] = {"label": node.job, "error": _one_line(e)}
                    progress.log(f"[{node.job}] FAILED: {failed[node.job]['error']}")
                    if self.debug and not isinstance(e, EdgeCompressError):
                        traceback.print_exc()
        arts = self.session.artifacts
        rows = []
        for job in self.plan.graph.jobs():
            if job not in failed:
                made = {step: arts[label] for step, label in self.plan.graph.job_steps(job).items()}
                rows.append(_row(job, made["export"], made["verify"], made["bench"]))
        student = [n.label for n in self.plan.graph if n.job is None][-1]
        from edgecompress.report import build_report, write_report
        report = build_report(self, arts["teacher"], arts[student], rows, list(failed.values()),
                              time.perf_counter() - t_start)
        dist = process_group()
        if dist is None or dist.get_rank() == 0:  # one writer of the run folder, as for the store
            write_report(report, self.run_dir)
        return report


def _one_line(e: Exception) -> str:
    if isinstance(e, EdgeCompressError):
        return str(e)
    return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def _row(label: str, exp: Artifact, ver: Artifact, bench: Artifact) -> dict:
    m, v, b = exp.metrics, ver.metrics, bench.metrics
    details = m.get("details") or {}
    return {"label": label, "format": m["format"], "precision": m["precision"], "runtime": m["runtime"],
            "test_accuracy": v.get("test_accuracy"), "test_accuracy_by_domain": v.get("test_accuracy_by_domain"),
            "test_accuracy_by_class": v.get("test_accuracy_by_class"),
            **{k: v[k] for k in EMBEDDING_COLUMNS if k in v},
            "label_agreement_vs_torch": v.get("test_label_agreement_vs_torch"),
            "parity_max_abs_diff": v["parity"]["max_abs_diff"], "parity": v["parity"],
            "p50_ms": b.get("p50_ms"), "p90_ms": b.get("p90_ms"), "p99_ms": b.get("p99_ms"),
            "e2e_p50_ms": b.get("e2e_p50_ms"), "e2e_p90_ms": b.get("e2e_p90_ms"),
            "tokenize_p50_ms": b.get("tokenize_p50_ms"),
            "load_ms": b.get("load_ms"), "peak_rss_mb": b.get("peak_rss_mb"), "file_mb": m["file_mb"],
            "file_bytes": details.get("file_bytes"), "embedding_table": details.get("embedding_table"),
            "threads": b.get("threads"), "runner": b.get("runner", "python"), "notes": m.get("notes", []),
            "export_id": exp.id, "verify_id": ver.id, "bench_id": bench.id,
            "export_path": str(exp.path)}


def run(recipe_path: Optional[Path], out_dir: Path = Path("runs"), quiet: bool = False, json_output: bool = False,
        rebench: bool = False, debug: bool = False) -> int:
    progress.set_quiet(quiet or json_output)
    t0 = time.perf_counter()
    recipe = load_recipe(recipe_path)
    for folder, what in ((Path(out_dir), "--out"), (home(), "EDGECOMPRESS_HOME")):
        _check_folder(folder, what)
    plan = make_plan(recipe)
    chain = [n.label for n in plan.graph if n.job is None]
    progress.log(f"plan OK in {time.perf_counter() - t0:.2f} s: {len(plan.graph)} steps: {' -> '.join(chain)}, then "
                 f"export, verify and bench {', '.join(plan.graph.jobs())}; training on {plan.placement}")
    run_dir = Path(out_dir) / recipe.name
    run_dir.mkdir(parents=True, exist_ok=True)
    from edgecompress.logs import to_log
    with to_log(run_dir / "run.log", enabled=not debug):  # third-party warnings and C++ prints; --debug shows them
        report = Runner(plan, run_dir, rebench=rebench, debug=debug).run()
    if json_output:
        print(json.dumps(report, default=json_default))
    else:  # the full report is in the run folder; the terminal ends on what to decide and type next
        from edgecompress.summary import print_summary
        print_summary(report, run_dir, quiet=quiet)
    if report["failures"]:
        return 3
    return 1 if report.get("budget_violations") else 0
