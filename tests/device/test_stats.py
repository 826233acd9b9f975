"""Percentiles (agent and host) equal numpy's default 'linear' method; spread and regression helpers."""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from edgecompress.bench import stats
from edgecompress.device.protocol import agent_path


@pytest.fixture(scope="module")
def agent():
    spec = importlib.util.spec_from_file_location("bench_agent_under_test", agent_path())
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("n", [1, 2, 3, 10, 51, 200])
def test_agent_and_host_percentiles_equal_numpy(agent, n):
    # setup
    rng = np.random.default_rng(n)
    values = list(rng.lognormal(3.0, 0.5, size=n))
    qs = [0, 1, 25, 50, 90, 99, 99.9, 100]

    # execute
    got_agent = [agent.percentile(values, q) for q in qs]
    got_host = [stats.percentile(values, q) for q in qs]

    # assert
    want = [float(np.percentile(values, q)) for q in qs]
    assert got_agent == pytest.approx(want, rel=1e-12)
    assert got_host == pytest.approx(want, rel=1e-12)


def test_agent_summary_matches_numpy(agent):
    # setup
    values = list(np.random.default_rng(7).normal(20, 3, size=97))

    # execute
    s = agent.summarize(values)

    # assert
    assert s["p90_ms"] == pytest.approx(np.percentile(values, 90), abs=1e-4)
    assert s["std_ms"] == pytest.approx(np.std(values), abs=1e-4)  # population std, ddof=0
    assert s["mean_ms"] == pytest.approx(np.mean(values), abs=1e-4) and s["runs"] == 97


def test_peak_rss_is_in_mib_from_either_source(agent, monkeypatch):
    # setup: what the kernel says in kB, both ways
    import builtins
    import resource
    hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))

    # execute
    from_proc = agent.peak_rss_mb()
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda p, *a, **k: (_ for _ in ()).throw(OSError("no /proc"))
                        if str(p) == "/proc/self/status" else real_open(p, *a, **k))
    from_rusage = agent.peak_rss_mb()
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    # assert: MiB, not kB or bytes (a unit slip is a factor of 1024)
    assert from_proc == pytest.approx(hwm_kb / 1024, rel=0.05)
    assert from_rusage == pytest.approx(maxrss_kb / 1024, rel=0.05)


def test_agent_cpu_list_parser(agent):
    # execute / assert
    assert agent.parse_cpu_list("4-7,9") == {4, 5, 6, 7, 9}
    assert agent.parse_cpu_list("0") == {0}


def test_spread_and_regression():
    # execute / assert
    assert stats.spread_pct([10.0, 11.0, 12.0]) == pytest.approx(200 / 11)  # (12-10)/median 11
    assert stats.regression_pct(44.0, 40.0) == pytest.approx(10.0)
    assert stats.regression_pct(36.0, 40.0) == pytest.approx(-10.0)
    assert math.isinf(stats.regression_pct(1.0, 0.0))
    summary = stats.repeat_summary([{"ok": True, "p50_ms": 10}, {"ok": True, "p50_ms": 12}, {"ok": False}])
    assert summary == {"metric": "p50_ms", "n": 2, "median": 11.0, "min": 10, "max": 12, "spread_pct": 18.18}


def test_percentile_rejects_empty():
    # execute / assert
    with pytest.raises(ValueError):
        stats.percentile([], 50)
