"""A cost model per target and format, fitted on the candidates measured there: each metric is a straight line in
one feature (latency in GFLOPs, file/memory/load in parameters). It only decides what need not be measured: a
candidate whose predicted cost is over a budget by more than the model's own held-out error is skipped, with the
prediction as the reason; everything that might fit is measured.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FEATURE = {"p90_ms": "gflops", "p50_ms": "gflops", "file_mb": "params", "peak_rss_mb": "params",
           "load_ms": "params"}
MIN_POINTS = 3


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    a = np.vstack([np.ones_like(x), x]).T
    (c0, c1), *_ = np.linalg.lstsq(a, y, rcond=None)
    return float(c0), float(c1)


@dataclass
class CostModel:
    """points: one dict per measured candidate: format, gflops, params and the measured metrics."""
    points: list[dict] = field(default_factory=list)

    def _xy(self, fmt: str, metric: str, skip: int = -1):
        pts = [(p[FEATURE[metric]], p[metric]) for i, p in enumerate(self.points)
               if i != skip and p["format"] == fmt and p.get(metric) is not None]
        if len(pts) < MIN_POINTS:
            return None
        x, y = np.array(pts, dtype=np.float64).T
        return x, y

    def predict(self, fmt: str, features: dict, metric: str, skip: int = -1):
        """The metric predicted from the other measured points of this format, or None with too few of them."""
        xy = self._xy(fmt, metric, skip)
        if xy is None:
            return None
        c0, c1 = _line(*xy)
        return max(0.0, c0 + c1 * features[FEATURE[metric]])

    def held_out_error(self, metric: str) -> dict:
        """Leave-one-out: each measured point predicted from the others; mean and max relative error, and n."""
        errs = []
        for i, p in enumerate(self.points):
            if p.get(metric) is None:
                continue
            pred = self.predict(p["format"], p, metric, skip=i)
            if pred is not None and p[metric] > 0:
                errs.append(abs(pred - p[metric]) / p[metric])
        if not errs:
            return {"n": 0, "mean_rel_err": None, "max_rel_err": None}
        return {"n": len(errs), "mean_rel_err": round(float(np.mean(errs)), 4),
                "max_rel_err": round(float(np.max(errs)), 4)}

    def clearly_over(self, fmt: str, features: dict, budgets: dict[str, float], judged: set) -> list[str]:
        """Budgets this candidate is predicted to miss by more than the model's held-out error (x2 for margin)."""
        out = []
        for key, limit in budgets.items():
            if key not in FEATURE or key not in judged:
                continue
            pred = self.predict(fmt, features, key)
            err = self.held_out_error(key)["mean_rel_err"]
            if pred is None or err is None:
                continue
            if pred > limit * (1 + 2 * err):
                out.append(f"{key} predicted {pred:.3g} > {limit:g} (cost model, held-out error {err:.0%})")
        return out
