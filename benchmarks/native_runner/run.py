"""Native ExecuTorch runner vs the Python agent on the default run's pte-int8, and the arm64 runner under qemu.

What it measures (results.json + results.md beside this script):
- the one-off build of the host runner and of the arm64 bundle (seconds, bundle MiB);
- latency, load time and peak RSS of the same .pte measured by both runners on this host, interleaved in
  --repeats rounds so both see the same CPU weather (batch 1, seq 128, 1 thread, OMP_WAIT_POLICY=PASSIVE);
- logits of the native runner vs the Python runtime on real test sentences (max abs diff);
- label agreement of the arm64 native runner under qemu (cortex-a72) with this host, on the test split.

    python benchmarks/native_runner/run.py [--artifact runs/default/artifacts/pte-int8] [--qemu-limit N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", type=Path, default=Path("runs/default/artifacts/pte-int8"))
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds per runner")
    ap.add_argument("--runs", type=int, default=50, help="timed inferences per round")
    ap.add_argument("--parity-samples", type=int, default=200, help="test sentences for the logits comparison")
    ap.add_argument("--qemu-limit", type=int, default=None, help="test sentences under qemu (default: all)")
    ap.add_argument("--skip-qemu", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE)
    return ap.parse_args(argv)


def builds() -> dict:
    from edgecompress.device import native
    out = {}
    for abi in ("x86_64", "aarch64"):
        bundle = native.build_runner(abi)
        rec = native.build_record(bundle)
        out[abi] = {"build_s": rec.get("build_s"), "bundle_mb": rec.get("bundle_mb"), "runner_kb": rec.get("runner_kb"),
                    "executorch": rec.get("executorch")}
    return out


def interleaved(exp, repeats: int, runs: int) -> dict:
    """Both runners, alternating, on one local transport per runner; every round's numbers are kept."""
    from edgecompress.bench.harness import bench_file
    from edgecompress.transports.local import LocalTransport
    rounds = {"python": [], "native": []}
    with LocalTransport() as tp, LocalTransport() as tn:
        for _ in range(repeats):
            for runner, t in (("python", tp), ("native", tn)):
                r = bench_file(exp.model_file, exp.io_json, "executorch", transport=t, threads=1, warmup_runs=5,
                               runs=runs, batch=1, seq_len=128, expected_json=exp.expected_json, runner=runner)
                if not r.get("ok"):
                    raise SystemExit(f"{runner} runner failed: {r.get('error')}")
                rounds[runner].append({k: r.get(k) for k in ("p50_ms", "p90_ms", "load_ms", "first_inference_ms",
                                                              "peak_rss_mb", "import_ms")})
    summary = {}
    for runner, rs in rounds.items():
        summary[runner] = {k: round(statistics.median(x[k] for x in rs if x[k] is not None), 3)
                           for k in ("p50_ms", "p90_ms", "load_ms", "peak_rss_mb")}
        summary[runner]["rounds"] = rs
    py, na = summary["python"]["p50_ms"], summary["native"]["p50_ms"]
    summary["p50_native_vs_python_pct"] = round(100 * (na - py) / py, 1)
    return summary


def labels(exp, target: str, limit, runner: str = "native") -> dict:
    from edgecompress.bench.on_target import verify_labels
    from edgecompress.transports.base import make_transport
    from edgecompress.transports.targets import parse_target
    t0 = time.perf_counter()
    with make_transport(parse_target(target)) as t:
        res = verify_labels(exp, t, limit=limit, runner=runner)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    return res


def markdown(res: dict) -> str:
    b, m = res["builds"], res["host"]
    lines = ["# Native ExecuTorch runner", "",
             f"Artifact `{res['artifact_id']}` (the default run's pte-int8), {res['machine']}; batch 1, seq 128, "
             f"1 thread, OMP_WAIT_POLICY=PASSIVE, {res['repeats']} interleaved rounds of {res['runs']} runs.", "",
             "| runner | p50 ms | p90 ms | load ms | peak RSS MiB |", "|---|---:|---:|---:|---:|"]
    for runner in ("python", "native"):
        r = m[runner]
        lines.append(f"| {runner} | {r['p50_ms']} | {r['p90_ms']} | {r['load_ms']} | {r['peak_rss_mb']} |")
    lines += ["", f"- native p50 vs python: {m['p50_native_vs_python_pct']:+.1f}%.",
              f"- logits, native runner vs the Python runtime on {res['parity']['n']} test sentences: max abs diff "
              f"{res['parity']['max_abs_logit_diff_host_runtime']}, label agreement "
              f"{res['parity']['agreement_host_runtime']}.",
              f"- builds: host runner {b['x86_64']['build_s']} s ({b['x86_64']['bundle_mb']} MiB bundle); arm64 "
              f"bundle {b['aarch64']['build_s']} s, {b['aarch64']['bundle_mb']} MiB (runner + ExecuTorch libraries + "
              f"loader + libc: runs with no sysroot)."]
    q = res.get("qemu")
    if q and not q.get("ok"):
        lines.append(f"- arm64 native runner under qemu: failed: {q.get('error')}")
    elif q:
        lines.append(f"- arm64 native runner under {q.get('emulator')}: {q['n']} test sentences, label agreement "
                     f"with this host {q['agreement_host_runtime']}, with torch {q['agreement_host_torch']}, max "
                     f"logit diff {q['max_abs_logit_diff_host_runtime']} ({q['wall_s']} s).")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from edgecompress.artifact import open_export
    args = parse_args(argv)
    exp = open_export(args.artifact)
    res = {"artifact_id": exp.artifact.id, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "repeats": args.repeats, "runs": args.runs, "builds": builds()}
    res["host"] = interleaved(exp, args.repeats, args.runs)
    res["parity"] = labels(exp, "local", args.parity_samples)
    if not args.skip_qemu:
        res["qemu"] = labels(exp, "qemu-arm64", args.qemu_limit)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(res, indent=2))
    (args.out / "results.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
