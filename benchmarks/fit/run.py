"""`edgecompress fit` on this host with the packaged data: benchmarks/fit/recipe.yaml (the packaged teacher and
data), budgets p90_ms=4 file_mb=6 (the default student is ~5 ms and 10.3 MiB), 1 thread. Writes results.json + results.md beside this script: the winner, its
accuracy against the teacher, how long the search phase took (everything but the final distillations), the cost
model's held-out error, and whether the ranking ordered the trained candidates as their final accuracy does.

    python benchmarks/fit/run.py [--budget p90_ms=4 file_mb=6] [--top-k 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=HERE / "recipe.yaml")
    ap.add_argument("--budget", nargs="+", default=["p90_ms=4", "file_mb=6"])
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("fit-bench"))
    ap.add_argument("--remeasure", action="store_true", help="measure every candidate again (a timed search phase)")
    ap.add_argument("--out", type=Path, default=HERE)
    return ap.parse_args(argv)


def ranking_check(doc: dict) -> dict:
    """Did the ranking (capacity) order the trained candidates as their final accuracy does?"""
    trained = [r for r in doc["rows"] if r.get("test_accuracy") is not None]
    out = {"trained": [{k: r.get(k) for k in ("name", "capacity", "test_accuracy")} for r in trained]}
    if len(trained) < 2:
        return {**out, "note": "fewer than two trained candidates: nothing to compare"}
    by_capacity = sorted(trained, key=lambda r: -r["capacity"])
    by_final = sorted(trained, key=lambda r: -r["test_accuracy"])
    out["capacity_order_matches_final"] = [r["name"] for r in by_capacity] == [r["name"] for r in by_final]
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    t0 = time.perf_counter()
    from edgecompress.recipe import load_recipe
    name = load_recipe(args.recipe).name
    p = subprocess.run([sys.executable, "-m", "edgecompress", "fit", str(args.recipe), "--target", "local",
                        "--top-k", str(args.top_k), *(["--remeasure"] if args.remeasure else []),
                        "--out", str(args.work), "--budget", *args.budget], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    report = args.work / name / "report.json"
    if not report.is_file():
        print(p.stderr[-3000:], file=sys.stderr)
        return p.returncode or 3
    doc = json.loads(report.read_text())
    win = next((r for r in doc["rows"] if r["status"] == "winner"), None)
    winner_recipe = (str(args.work / name / "recipe.yaml"), "benchmarks/fit/winner.yaml")  # no scratch paths in git
    res = {"command": f"edgecompress fit {args.recipe.name} --target local --top-k {args.top_k} "
                      f"{'--remeasure ' if args.remeasure else ''}--budget "
                      f"{' '.join(args.budget)}",
           "exit": p.returncode, "verdict": doc["verdict"].replace(*winner_recipe), "wall_s": round(wall, 1),
           "phases_s": doc["phases_s"],
           "search_phase_s": round(doc["phases_s"].get("prepare", 0) + doc["phases_s"].get("search", 0), 1),
           "teacher_accuracy": doc["teacher_accuracy"], "winner": win,
           "kept_of_teacher": (win["test_accuracy"] / doc["teacher_accuracy"]) if win else None,
           "cost_model_held_out": doc["cost_model"], "candidates": len(doc["rows"]),
           "measured": sum(bool(r.get("measured")) for r in doc["rows"]),
           "skipped": sum(r["status"] == "skipped" for r in doc["rows"]),
           "judged_to_fit_unmeasured": sum(bool(r.get("inferred_from")) for r in doc["rows"]),
           "ranking": ranking_check(doc),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    (args.out / "report.md").write_text((args.work / name / "report.md").read_text().replace(*winner_recipe))
    if win:  # beside, never over, the benchmark's own recipe
        shutil.copy(args.work / name / "recipe.yaml", args.out / "winner.yaml")
    md = ["# fit benchmark", "", f"`{res['command']}` (exit {res['exit']}), {res['machine']}.", "",
          f"- {res['verdict']}",
          f"- search phase (teacher + measuring every candidate): {res['search_phase_s']} s; whole fit {res['wall_s']} s",
          f"- candidates {res['candidates']}: measured {res['measured']}, skipped {res['skipped']} (at least as large "
          f"as one over budget, or by the cost model), judged to fit without measuring "
          f"{res['judged_to_fit_unmeasured']}",
          "- cost model held-out error: " + ", ".join(f"{k} {v['mean_rel_err']:.1%}" for k, v in
                                                       doc["cost_model"].items() if v.get("mean_rel_err") is not None),
          "", "Every candidate: `report.md` beside this file; what it means: `README.md`."]
    (args.out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
