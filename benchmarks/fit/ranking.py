"""Which ranking predicts a candidate's final accuracy better: capacity (transformer weights) or a short proxy
distillation (fit.proxy_train_samples rows, one epoch)? For each named candidate of a fit report: its capacity, its
proxy validation accuracy, and its final validation/test accuracy after the recipe's full protocol (a candidate
`edgecompress fit` already trained is reused from the store: same recipe, same artifact ids). Agreement is the
fraction of candidate pairs a ranking orders as the final validation accuracy does (Kendall's concordance).

    python benchmarks/fit/ranking.py --report fit-bench/fitbench/report.json --names L4-H256-I768-V3-pte ...
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=HERE / "recipe.yaml")
    ap.add_argument("--report", type=Path, default=Path("fit-bench/fitbench/report.json"))
    ap.add_argument("--names", nargs="+", required=True, help="candidates of the report to compare")
    ap.add_argument("--work", type=Path, default=Path("fit-bench/ranking"))
    ap.add_argument("--out", type=Path, default=HERE)
    return ap.parse_args(argv)


def agreement(rows: list[dict], key: str, truth: str) -> float:
    """Fraction of pairs (with different truth) that `key` orders the same way as `truth`."""
    pairs = [(a, b) for a, b in itertools.combinations(rows, 2) if a[truth] != b[truth]]
    same = sum((a[key] - b[key]) * (a[truth] - b[truth]) > 0 for a, b in pairs)
    return round(same / len(pairs), 3) if pairs else float("nan")


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from edgecompress.fit.search import FitSearch, recipe_for, search_plan
    from edgecompress.pipeline import Runner
    from edgecompress.plan import make_plan
    from edgecompress.fitspace import space_of
    from edgecompress.recipe import load_recipe
    recipe = load_recipe(args.recipe)
    space = space_of(recipe)
    by_name = {r["name"]: r for r in json.loads(args.report.read_text())["rows"]}
    missing = [n for n in args.names if n not in by_name]
    if missing:
        raise SystemExit(f"not in {args.report}: {', '.join(missing)}")
    plan = search_plan(recipe, FitSearch._cand(by_name[args.names[0]]))
    search = FitSearch(Runner(plan, args.work / "search"), space, {}, None, "local")
    search.prepare()
    rows = []
    for name in args.names:
        c = FitSearch._cand(by_name[name])
        t0 = time.perf_counter()
        proxy = search.proxy(c)
        proxy_s = time.perf_counter() - t0
        report = Runner(make_plan(recipe_for(recipe, c)), args.work / name).run()
        exp = next(x for x in report["rows"] if x["label"] == f"{c.format}-int8")
        rows.append({"name": name, "capacity": c.encoder_params(), "proxy_val_accuracy": proxy,
                     "proxy_s": round(proxy_s, 1), "final_val_accuracy": report["student"]["val_accuracy"],
                     "final_test_accuracy": exp["test_accuracy"]})
        print(rows[-1], flush=True)
    res = {"recipe": str(args.recipe.name), "proxy_train_samples": space.proxy_train_samples, "rows": rows,
           "agreement_with_final_val": {k: agreement(rows, k, "final_val_accuracy")
                                        for k in ("capacity", "proxy_val_accuracy")},
           "agreement_with_final_test": {k: agreement(rows, k, "final_test_accuracy")
                                         for k in ("capacity", "proxy_val_accuracy")}}
    (args.out / "ranking.json").write_text(json.dumps(res, indent=2))
    md = ["# fit ranking: capacity vs proxy distillation", "",
          f"`python benchmarks/fit/ranking.py --names {' '.join(args.names)}` ({len(rows)} candidates, "
          f"{len(rows) * (len(rows) - 1) // 2} pairs; proxy: {space.proxy_train_samples} rows, 1 epoch).", "",
          "| candidate | capacity | proxy val acc | proxy s | final val acc | final test acc |", "|---|---:|---:|---:|---:|---:|"]
    md += [f"| {r['name']} | {r['capacity']:,} | {r['proxy_val_accuracy']:.4f} | {r['proxy_s']} | "
           f"{r['final_val_accuracy']:.4f} | {r['final_test_accuracy']:.4f} |" for r in rows]
    md += ["", "Pairs ordered as the final accuracy orders them:", ""]
    md += [f"- {k}: {v} of pairs vs final validation, {res['agreement_with_final_test'][k]} vs final test"
           for k, v in res["agreement_with_final_val"].items()]
    (args.out / "ranking.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
