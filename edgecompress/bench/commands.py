"""CLI commands `profiles`, `bench`, `check` (registered into edgecompress/cli.py's subparsers).

Exit codes: 0 all budgets met · 1 a budget (or the baseline regression limit) was missed · 2 bad input ·
3 a device failed to produce a measurement. Results, JUnit and Markdown are written before the exit code is
decided, so CI gets its reports on every outcome.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

from edgecompress.config import shown
from edgecompress.device.protocol import BenchSettings
from edgecompress.errors import EdgeCompressError, UserInputError
from edgecompress.formats import FORMAT_NAMES, RUNNERS, check_runner_option

ACCURACY_KEYS = ("accuracy", "accuracy_drop", "reference_accuracy")


def register(sub) -> None:
    p = sub.add_parser("profiles", help="list the built-in device profiles")
    p.add_argument("--json", action="store_true", help="print the profiles as JSON")
    p.set_defaults(func=_cmd_profiles)

    b = sub.add_parser("bench", help="benchmark exported artifacts on a device and check its budgets")
    b.add_argument("path", type=Path, metavar="ARTIFACT_DIR_OR_FILE",
                   help="an export artifact folder (manifest.json + model + io.json), a folder of them, or a model file")
    b.add_argument("--profile", required=True, help="built-in profile name (see `edgecompress profiles`) or a YAML path")
    b.add_argument("--target", action="append", default=[], metavar="URL",
                   help="local | ssh://user@host:port | adb://SERIAL (repeat for a fleet; default: the profile's reach)")
    b.add_argument("--io", type=Path, help="io.json, for a bare model file")
    b.add_argument("--format", choices=FORMAT_NAMES, help="format of a bare model file")
    b.add_argument("--precision", default="fp32", help="precision of a bare model file (budget key FORMAT-PRECISION)")
    b.add_argument("--threads", type=int, help="default: the profile's threads for the format")
    defaults = BenchSettings()
    b.add_argument("--runs", type=int, help=f"default {defaults.runs}")
    b.add_argument("--warmup-runs", type=int, help=f"default {defaults.warmup_runs}")
    b.add_argument("--min-time-s", type=float, default=0.0)
    b.add_argument("--batch", type=int, help=f"default {defaults.batch}")
    b.add_argument("--seq-len", type=int, help=f"default {defaults.seq_len}")
    b.add_argument("--cpu-list", help="pin the agent to these device CPUs, e.g. 4-7")
    b.add_argument("--timeout-s", type=float, help=f"per file, on the device (default {defaults.timeout_s:g})")
    b.add_argument("--runner", choices=RUNNERS, help="native | python (default: the profile's per format; native "
                                                      "where the format has one)")
    b.add_argument("--out", type=Path, help="write results JSON here")
    _report_args(b)
    b.add_argument("--json", action="store_true", help="print the results JSON on stdout")
    b.set_defaults(func=_cmd_bench)

    c = sub.add_parser("check", help="check a results JSON against a profile's budgets (no device needed)")
    c.add_argument("results", type=Path, metavar="RESULTS.json")
    c.add_argument("--profile", required=True)
    _report_args(c)
    c.set_defaults(func=_cmd_check)


def _report_args(p) -> None:
    p.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML (one testcase per device/artifact/metric)")
    p.add_argument("--summary-md", type=Path, metavar="FILE", help="write a Markdown summary")
    p.add_argument("--baseline", type=Path, metavar="FILE", help="results JSON to compare against")
    p.add_argument("--max-regression-pct", type=float, default=10.0, help="allowed worsening vs --baseline (default 10)")


# ---------------------------------------------------------------- profiles

def _cmd_profiles(args) -> int:
    from edgecompress.profiles import list_profiles, load_profile
    profiles = [load_profile(n) for n in list_profiles()]
    if args.json:
        print(json.dumps([p.model_dump() for p in profiles], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table
    t = Table(title="device profiles")
    for col in ("name", "arch", "os", "cores", "memory", "formats (threads)", "reach", "description"):
        t.add_column(col)
    for p in profiles:
        cores = f"{p.cores.big}" + (f"+{p.cores.little}" if p.cores.little else "")
        fmts = ", ".join(f"{f} ({rc.threads})" for f, rc in p.runtimes.items())
        reach = p.reach.kind + (f" {p.reach.user + '@' if p.reach.user else ''}{p.reach.host}" if p.reach.kind == "ssh" else "")
        t.add_row(p.name, p.arch, p.os, cores, f"{p.memory_mb} MB", fmts, reach, p.description)
    Console().print(t)
    return 0


# ---------------------------------------------------------------- artifacts -> bench items

def _artifact_item(d: Path, profile, threads: Optional[int]):
    from edgecompress.artifact import open_export
    from edgecompress.bench.harness import BenchItem
    exp = open_export(d)  # hashes checked, paths confined to the folder
    metrics = exp.artifact.metrics
    meta = {"format": exp.format, "precision": exp.precision, "budget_key": exp.key,
            "artifact_id": exp.artifact.id, "artifact_dir": str(d)}
    meta.update({k: metrics[k] for k in ACCURACY_KEYS if metrics.get(k) is not None})
    accuracy = metrics.get("test_accuracy", _verified_accuracy(exp))
    if "accuracy" not in meta and accuracy is not None:
        meta["accuracy"] = accuracy
    return BenchItem(key=exp.key, model_file=exp.model_file, io_json=exp.io_json,
                     runtime=_runtime(profile, exp.format), threads=threads or profile.runtimes[exp.format].threads,
                     expected_json=exp.expected_json, extra_files=(), runner=profile.runner_for(exp.format), meta=meta)


def _verified_accuracy(exp) -> Optional[float]:
    """The test accuracy of the pipeline's verify step of this export, when it sits beside it in the store."""
    from edgecompress.artifact import Artifact
    for folder in sorted(exp.artifact.path.resolve().parent.glob("verify-*")):
        try:
            ver = Artifact.open(folder)
        except EdgeCompressError:
            continue
        if exp.artifact.id in (ver.manifest.get("parents") or []):
            return ver.metrics.get("test_accuracy")
    return None


def _runtime(profile, fmt: str) -> str:
    if fmt not in profile.runtimes:
        raise UserInputError(f"profile {profile.name} has no runtime for .{fmt}; it runs: {', '.join(profile.runtimes)}")
    from edgecompress.formats import FORMATS
    return FORMATS[fmt].runtime


def collect_items(path: Path, profile, *, io: Optional[Path] = None, fmt: Optional[str] = None,
                  precision: str = "fp32", threads: Optional[int] = None) -> list:
    from dataclasses import replace

    from edgecompress.bench.harness import BenchItem
    if path.is_file():
        if io is None or fmt is None:
            raise UserInputError(f"{path} is a bare model file: give --io io.json and --format "
                                 f"{{{','.join(FORMAT_NAMES)}}}")
        if not io.is_file():
            raise UserInputError(f"--io {io}: no such file")
        return [BenchItem(key=f"{fmt}-{precision}", model_file=path, io_json=io, runtime=_runtime(profile, fmt),
                          threads=threads or profile.runtimes[fmt].threads, runner=profile.runner_for(fmt),
                          meta={"format": fmt, "precision": precision, "budget_key": f"{fmt}-{precision}"})]
    if not path.is_dir():
        raise UserInputError(f"{path}: no such file or folder")
    if io is not None or fmt is not None:
        raise UserInputError(f"--io and --format describe a bare model file; {path} is a folder whose manifest.json "
                             f"says both: drop them")
    dirs = [path] if (path / "manifest.json").is_file() else sorted(
        m.parent for m in path.rglob("manifest.json") if _is_export(m))
    if not dirs:
        raise UserInputError(f"{path}: no export artifact (a folder with manifest.json whose config has format/precision)")
    items = [_artifact_item(d, profile, threads) for d in dirs]
    seen: dict[str, int] = {}
    for i, it in enumerate(items):  # two artifacts of one kind (e.g. two runs): tell them apart by id
        seen[it.key] = seen.get(it.key, 0) + 1
        if sum(x.key == it.key for x in items) > 1:
            items[i] = replace(it, key=f"{it.key}#{(it.meta.get('artifact_id') or str(seen[it.key]))[:8]}")
    return items


def _is_export(manifest: Path) -> bool:
    from edgecompress.artifact import Artifact
    try:
        cfg = Artifact.open(manifest.parent).manifest.get("config")
    except EdgeCompressError:
        return False
    return isinstance(cfg, dict) and cfg.get("format") in FORMAT_NAMES and bool(cfg.get("precision"))


# ---------------------------------------------------------------- bench / check

def _targets(urls: list[str], profile) -> dict:
    from edgecompress.transports.targets import parse_target
    from edgecompress.limits import MAX_TARGETS
    if not urls:
        return {profile.name: profile.reach}
    if len(urls) > MAX_TARGETS:
        raise UserInputError(f"{len(urls)} --target values; at most {MAX_TARGETS} devices per bench (one thread and "
                             f"connection each): split the fleet")
    reaches = [parse_target(u, profile.reach) for u in urls]
    if len(reaches) == 1:
        return {profile.name: reaches[0]}
    names = {}
    for u, r in zip(urls, reaches):
        names[f"{profile.name}@{u.split('://', 1)[-1].split('?', 1)[0] or r.kind}"] = r
    if len(names) != len(urls):
        raise UserInputError("the same --target is given twice")
    return names


def _cmd_bench(args) -> int:
    from edgecompress.bench.budget import RESULTS_SCHEMA
    from edgecompress.bench.harness import bench_fleet
    from edgecompress.profiles import load_profile

    from edgecompress.limits import check_bounds, check_cpu_list
    check_bounds({name: getattr(args, name) for name in ("runs", "batch", "seq_len", "warmup_runs", "threads",
                                                         "timeout_s", "min_time_s")})
    check_cpu_list(args.cpu_list)
    bench = BenchSettings().but(**{k: getattr(args, k, None) for k in BenchSettings.model_fields})
    profile = load_profile(args.profile)
    items = collect_items(args.path, profile, io=args.io, fmt=args.format, precision=args.precision,
                          threads=args.threads)
    for it in items:
        _check_seq_len(it, bench.seq_len)
    if args.runner:
        items = [_with_runner(it, args.runner) for it in items]
    targets = _targets(args.target, profile)
    settings = {**bench.model_dump(exclude={"threads"}), "min_time_s": args.min_time_s, "cpu_list": args.cpu_list}
    t0 = time.time()
    per_device = bench_fleet(items, targets, bench, min_time_s=args.min_time_s, cpu_list=args.cpu_list)
    results = [r for rs in per_device.values() for r in rs]
    doc = {"schema": RESULTS_SCHEMA, "profile": profile.name,
           "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
           "targets": {name: reach.model_dump() for name, reach in targets.items()},
           "settings": settings, "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2))
    if args.json:
        print(json.dumps(doc))
    return _verdict(doc, profile, args, quiet_table=args.json)


def _with_runner(item, runner: str):
    from dataclasses import replace
    check_runner_option(item.meta["format"], runner)
    return replace(item, runner=runner)


def _check_seq_len(item, seq_len: int) -> None:
    from edgecompress.export.iospec import IOSpec
    try:
        bound = IOSpec.read(item.io_json).max_seq_len
    except (OSError, ValueError, KeyError, TypeError):
        raise UserInputError(f"{item.io_json}: not a valid io.json (no max_seq_len); re-export the model") from None
    if seq_len > bound:
        raise UserInputError(f"--seq-len {seq_len} exceeds {item.key}'s exported max_seq_len {bound}; use --seq-len "
                             f"<= {bound} or re-export with a larger export.max_seq_len")


def _cmd_check(args) -> int:
    from edgecompress.bench.budget import read_results
    from edgecompress.profiles import load_profile
    profile = load_profile(args.profile)
    return _verdict(read_results(args.results), profile, args)


def _verdict(doc: dict, profile, args, quiet_table: bool = False) -> int:
    from edgecompress.bench.budget import compare_baseline, evaluate_budgets, read_results
    from edgecompress.bench.budget_report import write_junit, write_markdown

    results = doc["results"]
    checks = evaluate_budgets(results, profile)
    if args.baseline:
        checks += compare_baseline(results, read_results(args.baseline)["results"], args.max_regression_pct)
    if args.junit:
        write_junit(checks, args.junit)
    if args.summary_md:
        write_markdown(doc, checks, args.summary_md)
    if not quiet_table:
        _print_table(results)
    failed = [r for r in results if not r.get("ok")]
    for r in failed:
        print(f"edgecompress: device failure ({r.get('device')}, {r.get('artifact')}): {r.get('error')}", file=sys.stderr)
    missed = [c for c in checks if c.status == "fail"]
    for c in missed:
        print(f"edgecompress: {c.kind} missed: {c.message}", file=sys.stderr)
    if failed:
        return 3
    return 1 if missed else 0


def _print_table(results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    from edgecompress.bench.budget import fmt
    t = Table(title="bench results")
    cols = ("p50_ms", "p90_ms", "p99_ms", "load_ms", "peak_rss_mb", "file_mb")
    for col in ("device", "artifact", *cols, "threads"):
        t.add_column(col)
    for r in results:
        if r.get("ok"):
            # Emulated (qemu-arm64) latency is not a device figure: say so in the device cell and on each time.
            emu = "[yellow]*[/yellow]" if r.get("emulated") else ""
            dev = r.get("device", "") + (f" [yellow](emulated {r.get('machine', '')})[/yellow]" if emu else "")
            t.add_row(dev, r["artifact"], *((fmt(r[c]) + (emu if c.endswith("_ms") else "")) if r.get(c) is not None
                                             else "–" for c in cols), str(r.get("threads", "")))
        else:
            t.add_row(r.get("device", ""), r["artifact"], "[red]failed[/red]", *([""] * (len(cols))))
    if any(r.get("emulated") for r in results):
        t.caption = "* emulated: measured under qemu on this host, not a device latency; labels/outputs still count"
    Console(stderr=True).print(t)
