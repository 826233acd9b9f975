"""The accuracy-aware fallback driver shared by every exporter, against a fake format (no torch model, no runtime).

The fake build(excluded) returns an InferFn whose every still-quantized layer flips some rows away from the label,
so the accuracy drop of each candidate is known exactly.
"""
from __future__ import annotations

import numpy as np
import pytest

from edgecompress.export.quant.fallback import Reference, search

ROWS = 10
# Rows each layer flips while it is quantized: excluding "b" saves 0.2, "a" 0.3, "c" 0.1; "d" costs nothing.
FLIPS = {"a": [0, 1, 2], "b": [3, 4], "c": [5], "d": []}
# Most sensitive first, as sensitivity() would rank them; deliberately not alphabetical.
RANKING = [("b", 1.0), ("a", 2.0), ("c", 3.0), ("d", 4.0)]


def _reference() -> Reference:
    inputs = [{"rows": np.arange(0, 4)}, {"rows": np.arange(4, ROWS)}]  # two batches
    return Reference(inputs=inputs, labels=np.zeros(ROWS, dtype=np.int64), accuracy=1.0)


def _fake_format(calls: list):
    def build(excluded: list[str]):
        calls.append(list(excluded))
        flipped = {r for layer, rows in FLIPS.items() if layer not in excluded for r in rows}

        def infer(inputs: dict) -> np.ndarray:
            wrong = np.array([r in flipped for r in inputs["rows"]])
            return np.stack([~wrong, wrong], axis=1).astype(np.float32)  # argmax 1 where flipped

        return infer

    return build


def test_search_excludes_layers_in_ranking_order_until_the_drop_fits():
    # setup
    calls: list = []

    # execute
    res = search(_reference(), RANKING, _fake_format(calls), max_accuracy_drop=0.15, max_layers=4)

    # assert
    assert calls == [[], ["b"], ["b", "a"]]  # stops as soon as the drop fits: "c" and "d" are never tried
    assert res.excluded == ["b", "a"] and res.within_budget
    assert res.drop == pytest.approx(0.1)
    assert [h["accuracy_drop"] for h in res.history] == pytest.approx([0.6, 0.4, 0.1])
    assert [h.get("layer") for h in res.history] == [None, "b", "a"]
    assert res.to_json()["ranking"][0] == ["b", 1.0]


def test_search_stops_at_max_layers_and_reports_the_budget_missed():
    # setup
    calls: list = []

    # execute
    res = search(_reference(), RANKING, _fake_format(calls), max_accuracy_drop=0.15, max_layers=1)

    # assert
    assert res.excluded == ["b"] and not res.within_budget
    assert res.drop == pytest.approx(0.4)
    assert calls == [[], ["b"]]


def test_search_excludes_nothing_when_the_full_int8_candidate_fits():
    # setup
    calls: list = []

    # execute
    res = search(_reference(), RANKING, _fake_format(calls), max_accuracy_drop=0.6, max_layers=4)

    # assert
    assert res.excluded == [] and res.within_budget and calls == [[]]
