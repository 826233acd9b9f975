"""Host-side statistics over bench results: spread between repeated runs, regression vs a baseline.

The agent computes its own per-run percentiles (it must stay stdlib-only and self-contained on the device); the
definition is the same everywhere: numpy.percentile's default method='linear' (rank (n-1)*q/100, interpolated
between the two closest ranks), which tests/device/test_stats.py checks against numpy for both implementations.
"""
from __future__ import annotations

import math
from typing import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """numpy.percentile(values, q), method='linear'."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def spread_pct(values: Sequence[float]) -> float:
    """(max - min) / median, in percent: how far repeated measurements of the same thing disagree."""
    med = percentile(values, 50)
    if med == 0:
        return 0.0 if max(values) == min(values) else math.inf
    return (max(values) - min(values)) / med * 100.0


def regression_pct(new: float, baseline: float) -> float:
    """Relative change in percent; positive = worse for lower-is-better metrics (ms, MB)."""
    if baseline == 0:
        return 0.0 if new == 0 else math.inf
    return (new - baseline) / baseline * 100.0


def repeat_summary(results: Sequence[dict], metric: str = "p50_ms") -> dict:
    """Summary of one metric over repeated bench runs of the same file (failed runs are left out)."""
    vals = [r[metric] for r in results if r.get("ok") and r.get(metric) is not None]
    if not vals:
        return {"metric": metric, "n": 0}
    return {"metric": metric, "n": len(vals), "median": round(percentile(vals, 50), 4),
            "min": round(min(vals), 4), "max": round(max(vals), 4), "spread_pct": round(spread_pct(vals), 2)}


def in_process_p50_ms(infer, inputs: dict, runs: int = 30, warmup: int = 5) -> float:
    """Median wall time of `infer(inputs)` in this process, after `warmup` calls: the benchmark scripts' quick
    comparison of files side by side (device numbers come from the on-device runners)."""
    import time
    for _ in range(warmup):
        infer(inputs)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        infer(inputs)
        times.append((time.perf_counter() - t0) * 1000)
    return percentile(times, 50)
