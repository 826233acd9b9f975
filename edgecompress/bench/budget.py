"""Budgets: compare bench results with a profile's budgets (and a baseline) and say exactly what was missed.

Every comparison becomes a Check (pass / fail / error / skipped), so the JUnit report has one testcase per
(device, artifact, metric) and a passing budget is visible too, not only the misses. Messages read like
`p90_ms 41.2 > budget 40 (rpi4, onnx-int8)`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Literal, Mapping, Optional, Sequence

from edgecompress.bench.stats import regression_pct
from edgecompress.errors import UserInputError
from edgecompress.device.protocol import EMULATION_SKEWED
from edgecompress.profiles import Budget, DeviceProfile

RESULTS_SCHEMA = "edgecompress.bench/1"
# (result field, budget field); all lower-is-better.
BUDGET_METRICS: tuple[tuple[str, str], ...] = (("p90_ms", "p90_ms"), ("peak_rss_mb", "peak_rss_mb"),
                                              ("file_mb", "file_mb"), ("load_ms", "load_ms"),
                                              ("accuracy_drop", "max_accuracy_drop"))
REGRESSION_METRICS = ("p90_ms", "peak_rss_mb", "file_mb", "load_ms")


@dataclass(frozen=True)
class Check:
    device: str
    artifact: str
    metric: str
    status: Literal["pass", "fail", "error", "skipped"]
    message: str
    value: Optional[float] = None
    limit: Optional[float] = None
    kind: Literal["budget", "regression"] = "budget"

    def to_json(self) -> dict:
        return asdict(self)


def fmt(v: float) -> str:
    """41.2 -> '41.2', 40.0 -> '40', 0.0312 -> '0.0312', 41.234 -> '41.23': short and exact enough to act on."""
    return f"{round(v, 2) if abs(v) >= 1 else round(v, 4):g}"


def accuracy_drop(result: Mapping) -> Optional[float]:
    if result.get("accuracy_drop") is not None:
        return float(result["accuracy_drop"])
    acc, ref = result.get("accuracy"), result.get("reference_accuracy")
    return float(ref) - float(acc) if acc is not None and ref is not None else None


def check_result(result: Mapping, budget: Budget, device: str, artifact: str) -> list[Check]:
    """One Check per budgeted metric; a failed bench is an error for each, a metric not measured is skipped."""
    where = f"({device}, {artifact})"
    checks = []
    for metric, bfield in BUDGET_METRICS:
        limit = getattr(budget, bfield)
        if limit is None:
            continue
        # No "ok" key = a row assembled from stored metrics (the pipeline's report), not a raw bench result.
        if metric != "accuracy_drop" and not result.get("ok", True):
            checks.append(Check(device, artifact, metric, "error", f"bench failed: {result.get('error')} {where}",
                                limit=limit))
            continue
        value = accuracy_drop(result) if metric == "accuracy_drop" else result.get(metric)
        if result.get("emulated") and metric in EMULATION_SKEWED:
            checks.append(Check(device, artifact, metric, "skipped", f"{metric} measured under emulation "
                                f"({result.get('emulator')}), not a device figure: not checked {where}", value, limit))
        elif value is None:
            checks.append(Check(device, artifact, metric, "skipped", f"{metric} not measured {where}", limit=limit))
        elif value > limit:
            checks.append(Check(device, artifact, metric, "fail", f"{metric} {fmt(value)} > budget {fmt(limit)} {where}",
                                value, limit))
        else:
            checks.append(Check(device, artifact, metric, "pass", f"{metric} {fmt(value)} <= budget {fmt(limit)} {where}",
                                value, limit))
    return checks


def check_budgets(result: Mapping, profile: DeviceProfile, key: str, override: Optional[Budget] = None,
                  device: Optional[str] = None) -> list[Check]:
    """The misses (fail or error) of ONE result against profile.budget_for(key) (+ a recipe's override).

    What the pipeline's report calls: each returned Check's .message is a line like
    `p90_ms 41.2 > budget 40 (rpi4, onnx-int8)`.
    """
    budget = profile.budget_for(key, override)
    checks = check_result(result, budget, device or result.get("device") or profile.name, key)
    return [c for c in checks if c.status in ("fail", "error")]


def evaluate_budgets(results: Iterable[Mapping], profile: DeviceProfile,
                     overrides: Optional[Mapping[str, Budget]] = None) -> list[Check]:
    """Every check (pass too) for many results, for JUnit: budgets from profile.budget_for(budget_key or artifact),
    a recipe's override per key (or "default") winning."""
    checks: list[Check] = []
    for r in results:
        # budget_key is FORMAT-PRECISION; artifact may carry a suffix to tell two artifacts of one kind apart.
        key = r.get("budget_key") or r["artifact"]
        budget = profile.budget_for(key, (overrides or {}).get(key) or (overrides or {}).get("default"))
        checks += check_result(r, budget, r.get("device", profile.name), r["artifact"])
    return checks


def compare_baseline(results: Iterable[Mapping], baseline: Iterable[Mapping], max_regression_pct: float,
                     metrics: Sequence[str] = REGRESSION_METRICS) -> list[Check]:
    """Results matched to the baseline by (device, artifact); worse by more than max_regression_pct fails."""
    base = {(b.get("device"), b.get("artifact")): b for b in baseline if b.get("ok")}
    checks = []
    for r in results:
        dev, art = r.get("device"), r.get("artifact")
        b = base.get((dev, art))
        if b is None or not r.get("ok"):
            continue
        for m in metrics:
            if r.get(m) is None or b.get(m) is None:
                continue
            pct = regression_pct(r[m], b[m])
            status = "fail" if pct > max_regression_pct else "pass"
            rel = ">" if status == "fail" else "<="
            msg = (f"{m} {fmt(r[m])} is {pct:+.1f}% vs baseline {fmt(b[m])} ({rel} {fmt(max_regression_pct)}% allowed) "
                   f"({dev}, {art})")
            checks.append(Check(dev, art, f"{m}_regression", status, msg, r[m], b[m], "regression"))
    return checks


def read_results(path: Path) -> dict:
    """A results.json written by `edgecompress bench` ({"schema", "profile", "results": [...]})."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as e:
        raise UserInputError(f"{path}: cannot read ({e.strerror or e})") from None
    except ValueError as e:
        raise UserInputError(f"{path}: not JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise UserInputError(f"{path}: not a bench results file (expected an object with a 'results' list)")
    numeric = {m for m, _ in BUDGET_METRICS} | {"p50_ms", "p99_ms", "accuracy", "reference_accuracy"}
    for i, r in enumerate(doc["results"]):
        if not isinstance(r, dict) or not isinstance(r.get("artifact"), str):
            raise UserInputError(f"{path}: results[{i}] has no 'artifact' name")
        for k in sorted(numeric & set(r)):
            v = r[k]
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v != v):
                raise UserInputError(f"{path}: results[{i}].{k} is {str(v)[:40]!r}, not a number; write numbers "
                                     f"(or null) for measured values")
    return doc
