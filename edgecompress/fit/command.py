"""`edgecompress fit RECIPE --profile P --target URL --budget p90_ms=15 file_mb=8`: the most accurate student that
meets every budget on that device, a recipe that reproduces it with `edgecompress run`, and the frontier.

Exit codes like `bench`: 0 found · 1 no candidate meets the budgets (the closest one and what it misses, in one line)
· 2 bad input · 3 the device failed.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml

from edgecompress import progress
from edgecompress.errors import UserInputError
from edgecompress.device.protocol import EMULATION_SKEWED


def parse_budgets(items: list[str]) -> dict[str, float]:
    """`p90_ms=15 file_mb=8` -> {"p90_ms": 15.0, "file_mb": 8.0}; the keys are profiles.Budget's."""
    from edgecompress.profiles import Budget
    known = [k for k in Budget.model_fields if k != "max_accuracy_drop"]
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise UserInputError(f"--budget {item[:60]!r}: expected KEY=VALUE with KEY one of {', '.join(known)}")
        if key in out:
            raise UserInputError(f"--budget {key} is given twice; give each budget once")
        try:
            out[key] = float(value)
        except ValueError:
            raise UserInputError(f"--budget {item[:60]!r}: {value[:40]!r} is not a number") from None
        if not out[key] > 0 or out[key] != out[key] or out[key] == float("inf"):
            raise UserInputError(f"--budget {item[:60]!r}: must be a positive finite number")
    if not out:
        raise UserInputError(f"fit needs at least one --budget KEY=VALUE ({', '.join(known)})")
    return out


# How far over a budget a measurement must be before it decides larger candidates unmeasured: latency and load
# time move between runs on the same device (p90 read 3.98 and 4.17 ms for one candidate on two days); file size and
# memory do not. A miss inside the margin is measured again on each larger candidate instead.


def register(sub) -> None:
    p = sub.add_parser("fit", help="search the most accurate student that meets a device's budgets")
    p.add_argument("recipe", nargs="?", type=Path, help="recipe YAML (its fit: section is the search space)")
    p.add_argument("--profile", help="device profile (default: the recipe's)")
    p.add_argument("--target", help="where to measure: local | ssh://... | adb://... | qemu-arm64 (default: the "
                                    "profile's reach)")
    p.add_argument("--budget", nargs="+", required=True, metavar="KEY=VALUE",
                   help="p90_ms=, file_mb=, peak_rss_mb=, load_ms= (all must hold)")
    p.add_argument("--top-k", type=int, help="candidates distilled in full (default: fit.top_k)")
    p.add_argument("--out", type=Path, default=Path("fit"), help="parent folder of fit/<recipe name>/")
    p.add_argument("--remeasure", action="store_true",
                   help="measure every candidate again instead of reusing stored measurements")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=fit_command)


def _setup(args):
    """Everything validated before any work: recipe, budgets, profile, target, the whole search space (each
    candidate's recipe plans)."""
    from edgecompress.fit.search import search_plan
    from edgecompress.fitspace import candidates, space_of
    from edgecompress.model_dir import check_model_dir, resolve_model_dir
    from edgecompress.recipe import load_recipe, parse_recipe
    from edgecompress.tasks import task_row
    from edgecompress.transports.targets import parse_target
    budgets = parse_budgets(args.budget)
    recipe = load_recipe(args.recipe)
    if args.profile:
        recipe = parse_recipe({**recipe.model_dump(mode="json", exclude_unset=True), "profile": args.profile}, "recipe")
    space = space_of(recipe)
    if args.top_k is not None:
        if args.top_k < 1:
            raise UserInputError("--top-k must be >= 1")
        space = space.model_copy(update={"top_k": args.top_k})
    cands = candidates(space, check_model_dir(resolve_model_dir(recipe.teacher.source)),
                       task_row(recipe).keeps_teacher_width)
    # a candidate of each format plans (exporters x quantization x profile, stages); the cheapest one's is the search's
    plans = {fmt: search_plan(recipe, next(c for c in cands if c.format == fmt)) for fmt in space.formats}
    plan = plans[cands[0].format]
    reach = parse_target(args.target, plan.profile.reach) if args.target else plan.profile.reach
    return plan, space, budgets, reach, len(cands)


def fit_command(args) -> int:
    from edgecompress.logs import to_log
    from edgecompress.paths import home
    from edgecompress.pipeline import Runner
    from edgecompress.transports.base import make_transport
    progress.set_quiet(args.quiet)
    plan, space, budgets, reach, n = _setup(args)
    out_dir = Path(args.out) / plan.recipe.name
    target = args.target or reach.kind
    progress.log(f"fit {plan.recipe.name}: {n} candidates on {target} (profile {plan.profile.name}), budgets "
                 + " ".join(f"{k}={v:g}" for k, v in budgets.items()) + f"; store {home() / 'store'}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with to_log(out_dir / "fit.log", enabled=not getattr(args, "debug", False)), make_transport(reach) as transport:
        doc = _run(Runner(plan, out_dir / "search"), space, budgets, transport, target, out_dir, args.remeasure)
    from edgecompress.fit.report import write
    from edgecompress.tasks import task_row
    write(doc, out_dir, task_row(plan.recipe))
    progress.log(f"report: {out_dir / 'report.md'}")
    print(doc["verdict"])
    sys.stdout.flush()
    return 0 if doc["winner"] else 1


def _run(runner, space, budgets, transport, target: str, out_dir: Path, remeasure: bool = False) -> dict:
    from edgecompress.fit.report import teacher_key
    from edgecompress.fit.search import FitSearch
    s = FitSearch(runner, space, budgets, transport, target, remeasure)
    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    progress.log("[fit] teacher and data")
    s.prepare()
    phases["prepare"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    progress.log(f"[fit] measuring candidates on {target} (sliced weights, no training)")
    rows = s.search()
    feasible = s.rank([r for r in rows if r["status"] == "feasible"])
    phases["search"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    trained = []
    for r in feasible[:space.top_k]:
        progress.log(f"[fit] distilling {r['name']} with the recipe's protocol")
        t = s.train(r, out_dir / "runs")
        r.update(**t["scores"], **{f"final_{k}": v for k, v in t["final"].items()},
                 status="trained", why="; ".join(t["misses_after_training"]) or None)
        trained.append((r, t))
    for r in feasible[space.top_k:]:
        r.update(status="not trained", why=f"ranked below the top {space.top_k} by {space.rank_by}" + (
            f"; not measured: no larger than {r['inferred_from']}, which meets every budget"
            if r.get("inferred_from") else ""))
    phases["train"] = time.perf_counter() - t0
    doc = {"name": runner.recipe.name, "target": target, "profile": runner.plan.profile.name, "budgets": budgets,
           "emulated": s.out.emulated, teacher_key(s.task): s.out.teacher_score, "rank_by": space.rank_by,
           "cost_model": s.out.cost_model, "phases_s": {k: round(v, 1) for k, v in phases.items()}, "rows": rows,
           "winner": None}
    doc.update(_verdict(s, s.select(trained), trained, rows, out_dir))
    return doc


def _verdict(s, best, trained: list, rows: list[dict], out_dir: Path) -> dict:
    """The winner (its recipe written beside the report) and the one-line verdict; each other trained candidate
    says why it lost. Scores are named as the task names them (tasks.Score)."""
    from edgecompress.fit.search import closest
    if best is None:
        near = closest(rows, s.budgets)
        return {"verdict": "no candidate meets the budgets; closest: " + (f"{near['name']} ({near['why']})" if near
                                                                         else "none measured")}
    sc, metric, key = s.task.score, s.task.metric, s.out.chosen_on
    row, t = best
    row["status"] = "winner"
    split = "validation" if key == sc.val else "test"
    for other, _ in trained:
        if other is not row and other["status"] == "trained":
            a, b = other[key], row[key]
            other["why"] = other["why"] or (f"{sc.worse} on {split} ({a:.4f} < {b:.4f})" if a < b else
                                            f"{sc.same} ({a:.4f}); the winner ranked higher by {s.space.rank_by}")
    # As the user would write it: a full dump would mark every default as written, and some are refused as written
    # on another task (a distill's alpha on an embedding recipe).
    (out_dir / "recipe.yaml").write_text(yaml.safe_dump(t["recipe"].model_dump(mode="json", exclude_unset=True),
                                                        sort_keys=False))
    ref = s.out.teacher_score
    kept = f" ({row[metric] / ref:.1%} {sc.of_teacher})" if ref else ""
    return {"winner": row["name"],
            "verdict": f"found {row['name']}: {sc.name} {row[metric]:.4f}{kept}, "
            + ", ".join(f"{k} {row.get('final_' + k):.3g}" for k in s.budgets if row.get("final_" + k) is not None)
            + (f" (emulated target: {', '.join(EMULATION_SKEWED)} not judged)" if s.out.emulated else "")
            + f"; reproduce with: edgecompress run {out_dir / 'recipe.yaml'}"}
