"""Same artifacts, benched through the local transport and through a real sshd on 127.0.0.1, interleaved.

Shows that the SSH path measures the same thing as the local one (only push/exec overhead differs, and that is
outside the timed region) and how much p50 moves between repeated runs on this machine.

    python benchmarks/ssh_vs_local/run.py ARTIFACT_DIR [ARTIFACT_DIR ...] [--repeats 5] [--runs 50]

ARTIFACT_DIR is an export artifact (manifest.json + model file + io.json), e.g. runs/default/artifacts/onnx-int8.
Writes results.json and results.md beside this script.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from edgecompress.artifact import Artifact  # noqa: E402
from edgecompress.bench.harness import bench_file  # noqa: E402
from edgecompress.transports.base import make_transport  # noqa: E402
from edgecompress.transports.loopback_sshd import loopback_sshd  # noqa: E402

KEYS = ("p50_ms", "p90_ms", "p99_ms", "load_ms", "peak_rss_mb")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup-runs", type=int, default=20)
    args = ap.parse_args()
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp, loopback_sshd(Path(tmp)) as reach, make_transport(reach) as ssh:
        for a in args.artifacts:
            art = Artifact.open(a.resolve())
            m = art.metrics
            label = f"{m['format']}-{m['precision']}"
            res = {"local": [], "ssh": []}
            for _ in range(args.repeats):  # interleaved so drift in machine load hits both alike
                for name, transport in (("local", None), ("ssh", ssh)):
                    r = bench_file(art.path / m["file"], art.path / "io.json", m["runtime"], threads=1, warmup_runs=args.warmup_runs,
                                   runs=args.runs, batch=1, seq_len=128, transport=transport,
                                   expected_json=art.path / "expected.json")
                    if not r.get("ok"):
                        raise SystemExit(f"{label} via {name}: {r.get('error')}")
                    res[name].append({k: r[k] for k in KEYS} | {"wall_s": r.get("wall_s")})
            out[label] = {name: {"runs": rows, **{f"{k}_median": statistics.median(x[k] for x in rows) for k in KEYS},
                                 "p50_spread_pct": 100 * (max(x["p50_ms"] for x in rows) - min(x["p50_ms"] for x in rows))
                                 / statistics.median(x["p50_ms"] for x in rows)}
                          for name, rows in res.items()}
    here = Path(__file__).parent
    (here / "results.json").write_text(json.dumps(out, indent=2))
    lines = ["| artifact | transport | p50 ms (median) | p50 spread % | p90 ms | p99 ms | load ms | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    for label, per in out.items():
        for name, s in per.items():
            lines.append(f"| {label} | {name} | {s['p50_ms_median']:.2f} | {s['p50_spread_pct']:.1f} | {s['p90_ms_median']:.2f} | "
                         f"{s['p99_ms_median']:.2f} | {s['load_ms_median']:.0f} | {s['peak_rss_mb_median']:.0f} |")
    (here / "results.md").write_text(f"{args.repeats} interleaved repeats x {args.runs} runs each after {args.warmup_runs} warmup, batch 1, seq 128, "
                                     "1 thread, sshd on 127.0.0.1 (same machine).\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
