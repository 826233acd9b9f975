"""The default run's headline, measured the way a new user meets it: `edgecompress run` on a recipe, cold.

Cases are recipe x data:
  recipes  default  edgecompress/recipes/default.yaml (what `edgecompress run` runs)
           before   benchmarks/default/before.yaml (the default before the size and small-data work)
  data     full     the packaged VADER (12,677 train rows)
           3k       the same with the train split cut to 3,000 rows (stratified, seed 0); validation and test whole,
                    the teacher fine-tuned on those 3,000 rows too (the recipe's own teacher step)

Each case is one `edgecompress run RECIPE --json` in a subprocess with a fresh $EDGECOMPRESS_HOME (so every step is
computed: a cold run). The native runner's one-time build per machine is linked in from the user's home, not
rebuilt, and is not part of the time. The wall time is the subprocess's. Results merge into results.json by case, so
cases can run one at a time; results.md is rewritten from all of them.

Reproduce:  python benchmarks/default/run.py                      (all four cases, ~40 min on 2 cores)
            python benchmarks/default/run.py --cases default:full default:3k
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
RECIPES = {"default": ROOT / "edgecompress" / "recipes" / "default.yaml", "before": HERE / "before.yaml"}
SMALL_ROWS = 3000
BAR = {"speedup": 10.0, "smaller": 20.0, "of_teacher": 0.98, "cold_s": 600.0}


def small_vader(out: Path, rows: int = SMALL_ROWS, seed: int = 0) -> Path:
    """The packaged VADER with its train split cut to `rows` (stratified by label); other splits copied whole."""
    from edgecompress.data import PACKAGED_DIR
    out.mkdir(parents=True, exist_ok=True)
    for f in PACKAGED_DIR.iterdir():
        if f.suffix in (".csv", ".json") and f.name != "train.csv":
            (out / f.name).write_bytes(f.read_bytes())
    with open(PACKAGED_DIR / "train.csv", newline="", encoding="utf-8") as fh:
        train = list(csv.DictReader(fh))
    labels = np.array([r["label"] for r in train])
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        keep += list(rng.choice(members, round(rows * len(members) / len(train)), replace=False))
    with open(out / "train.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(train[0]))
        w.writeheader()
        w.writerows(train[i] for i in sorted(keep)[:rows])
    return out


def run_case(recipe: str, data: str, work: Path) -> dict:
    spec = yaml.safe_load(RECIPES[recipe].read_text())
    spec["name"] = f"{recipe}-{data}"
    if data == "3k":
        spec["data"]["source"] = str(small_vader(work / "vader-3k"))
    path = work / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    home = work / f"home-{spec['name']}"
    home.mkdir()
    from edgecompress.paths import native_dir
    if native_dir().exists():
        (home / "native").symlink_to(native_dir())
    env = {**os.environ, "EDGECOMPRESS_HOME": str(home)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgecompress", "run", str(path), "--json", "--out", str(work)],
                          env=env, capture_output=True, text=True, cwd=work)
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{spec['name']}: edgecompress run exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout)
    return summarize(report, seconds)


def summarize(report: dict, seconds: float) -> dict:
    rows = {r["label"]: r for r in report["rows"]}
    keep = ("test_accuracy", "accuracy_vs_teacher", "p50_ms", "speedup_vs_teacher", "file_mb", "size_ratio_vs_teacher",
            "peak_rss_mb", "verified", "runner", "file_mb_by_component")
    return {"cold_seconds": round(seconds, 1), "best": report["best"],
            "teacher_test_accuracy": report["teacher"].get("test_accuracy"),
            "student": {"test_accuracy": report["student"].get("test_accuracy"), "params": report["student"].get("params"),
                        "vocab_size": (report["student"].get("vocab") or {}).get("vocab_size")},
            "rows": {label: {k: r.get(k) for k in keep if k in r} for label, r in rows.items()}}


def markdown(results: dict) -> str:
    lines = ["# The default run, measured", "",
             "`python benchmarks/default/run.py` (cold runs in a fresh store, one after another, nothing else on the "
             "machine). Best = the fastest file that verifies. Bar: "
             f">= {BAR['speedup']:.0f}x lower p50 than the fp32 teacher ONNX, >= {BAR['smaller']:.0f}x smaller, "
             f">= {BAR['of_teacher']:.0%} of the teacher's test accuracy, cold run <= {BAR['cold_s'] / 60:.0f} min on the full "
             "data; on 3,000 rows (the teacher fine-tuned on them too) >= 98% of that teacher.", "",
             "| case | best | teacher acc | best acc | % of teacher | p50 ms | faster | MiB | smaller | cold s | bar |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for case, r in sorted(results.items()):
        b = r["rows"].get(r["best"] or "", {})
        # The bar: on the full data every number; on 3,000 rows the share of the teacher's accuracy.
        ok = b.get("accuracy_vs_teacher", 0) >= BAR["of_teacher"] and (case.endswith(":3k") or (
            b.get("speedup_vs_teacher", 0) >= BAR["speedup"] and b.get("size_ratio_vs_teacher", 0) >= BAR["smaller"]
            and r["cold_seconds"] <= BAR["cold_s"]))
        lines.append(f"| {case} | {r['best']} | {r['teacher_test_accuracy']:.4f} | {b.get('test_accuracy', 0):.4f} | "
                     f"{b.get('accuracy_vs_teacher', 0):.1%} | {b.get('p50_ms', 0):.2f} | "
                     f"{b.get('speedup_vs_teacher', 0):.2f}x | {b.get('file_mb', 0):.2f} | "
                     f"{b.get('size_ratio_vs_teacher', 0):.1f}x | {r['cold_seconds']:.0f} | {'met' if ok else 'missed'} |")
    lines += ["", "Every file of each case:", "",
              "| case | file | verified | acc | % of teacher | p50 ms | faster | MiB | smaller | peak RSS MiB |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for case, r in sorted(results.items()):
        for label, x in r["rows"].items():
            lines.append(f"| {case} | {label} | {x.get('verified', '—')} | {x.get('test_accuracy', 0):.4f} | "
                         f"{x.get('accuracy_vs_teacher') or 0:.1%} | {x.get('p50_ms') or 0:.2f} | "
                         f"{x.get('speedup_vs_teacher') or 0:.2f}x | {x.get('file_mb') or 0:.2f} | "
                         f"{x.get('size_ratio_vs_teacher') or 0:.1f}x | {x.get('peak_rss_mb') or 0:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["before:full", "default:full", "before:3k", "default:3k"],
                    help="recipe:data pairs (recipes: default, before; data: full, 3k)")
    args = ap.parse_args()
    out = HERE / "results.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    for case in args.cases:
        recipe, data = case.split(":")
        with tempfile.TemporaryDirectory(prefix="edgecompress-default-bench-") as tmp:
            print(f"{case}: running", flush=True)
            results[case] = run_case(recipe, data, Path(tmp))
        print(f"{case}: done in {results[case]['cold_seconds']:.0f} s, best {results[case]['best']}", flush=True)
        out.write_text(json.dumps(results, indent=2) + "\n")  # each finished case is kept
        (HERE / "results.md").write_text(markdown(results))


if __name__ == "__main__":
    main()
