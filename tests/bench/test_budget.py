"""Budgets fail for the right reason with the exact message, pass when within; JUnit and Markdown reports."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from edgecompress.bench.budget import check_budgets, check_result, compare_baseline, evaluate_budgets
from edgecompress.bench.budget_report import junit_xml, markdown_summary
from edgecompress.profiles import Budget, load_profile


def _result(**kw):
    r = {"ok": True, "device": "rpi4", "artifact": "onnx-int8", "p90_ms": 30.0, "peak_rss_mb": 200.0, "file_mb": 20.0,
         "load_ms": 500.0, "accuracy_drop": 0.01}
    r.update(kw)
    return r


def test_p90_over_budget_fails_with_exact_message():
    # setup
    profile = load_profile("rpi4")

    # execute
    checks = evaluate_budgets([_result(p90_ms=41.2)], profile)

    # assert
    failed = [c for c in checks if c.status == "fail"]
    assert [c.message for c in failed] == ["p90_ms 41.2 > budget 40 (rpi4, onnx-int8)"]
    assert {c.metric for c in checks} == {"p90_ms", "peak_rss_mb", "file_mb", "load_ms", "accuracy_drop"}


def test_within_budget_passes():
    # execute
    checks = evaluate_budgets([_result()], load_profile("rpi4"))

    # assert
    assert all(c.status == "pass" for c in checks)


def test_each_metric_fails_for_its_own_reason():
    # setup
    budget = Budget(p90_ms=40, peak_rss_mb=300, file_mb=30, load_ms=1000, max_accuracy_drop=0.02)

    # execute
    checks = check_result(_result(peak_rss_mb=301, file_mb=31.5, load_ms=1200, accuracy_drop=0.035), budget,
                          "rpi4", "onnx-int8")

    # assert
    msgs = sorted(c.message for c in checks if c.status == "fail")
    assert msgs == ["accuracy_drop 0.035 > budget 0.02 (rpi4, onnx-int8)", "file_mb 31.5 > budget 30 (rpi4, onnx-int8)",
                    "load_ms 1200 > budget 1000 (rpi4, onnx-int8)", "peak_rss_mb 301 > budget 300 (rpi4, onnx-int8)"]


def test_accuracy_drop_from_accuracy_and_reference_and_recipe_override():
    # setup
    r = _result(accuracy_drop=None, accuracy=0.80, reference_accuracy=0.85)

    # execute
    default = evaluate_budgets([r], load_profile("rpi4"))
    strict = evaluate_budgets([r], load_profile("rpi4"), overrides={"onnx-int8": Budget(max_accuracy_drop=0.01)})

    # assert
    acc = lambda cs: next(c for c in cs if c.metric == "accuracy_drop")  # noqa: E731
    assert acc(default).status == "fail" and acc(default).message.startswith("accuracy_drop 0.05 > budget 0.03")
    assert acc(strict).message == "accuracy_drop 0.05 > budget 0.01 (rpi4, onnx-int8)"


def test_failed_bench_is_an_error_per_budget_not_a_pass():
    # execute
    checks = evaluate_budgets([{"ok": False, "device": "rpi4", "artifact": "onnx-int8", "error": "ssh: refused"}],
                           load_profile("rpi4"))

    # assert
    assert {c.status for c in checks if c.metric != "accuracy_drop"} == {"error"}
    assert "bench failed: ssh: refused (rpi4, onnx-int8)" in [c.message for c in checks]


def test_baseline_regression_threshold():
    # setup
    base = [_result(p90_ms=40.0)]

    # execute
    within = compare_baseline([_result(p90_ms=43.9)], base, max_regression_pct=10)
    over = compare_baseline([_result(p90_ms=45.0)], base, max_regression_pct=10)

    # assert
    assert next(c for c in within if c.metric == "p90_ms_regression").status == "pass"
    bad = [c for c in over if c.status == "fail"]
    assert [c.message for c in bad] == ["p90_ms 45 is +12.5% vs baseline 40 (> 10% allowed) (rpi4, onnx-int8)"]


def test_junit_xml_has_one_testcase_per_device_artifact_metric():
    # setup
    results = [_result(p90_ms=41.2), _result(artifact="pte-int8", budget_key="pte-int8"),
               {"ok": False, "device": "rpi4", "artifact": "ptl-int8", "error": "timeout"}]
    checks = evaluate_budgets(results, load_profile("rpi4"))

    # execute
    root = ET.fromstring(junit_xml(checks))

    # assert
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(checks) == 15
    assert len({(c.get("classname"), c.get("name")) for c in cases}) == 15
    failures = [c.find("failure") for c in cases if c.find("failure") is not None]
    assert [f.get("message") for f in failures] == ["p90_ms 41.2 > budget 40 (rpi4, onnx-int8)"]
    assert suite.get("failures") == "1" and suite.get("errors") == "4"
    assert sum(c.find("error") is not None for c in cases) == 4


def test_markdown_summary_lists_misses_and_failures():
    # setup
    results = [_result(p90_ms=41.2), {"ok": False, "device": "rpi4", "artifact": "ptl-int8", "error": "timeout"}]
    doc = {"profile": "rpi4", "results": results}

    # execute
    md = markdown_summary(doc, evaluate_budgets(results, load_profile("rpi4")))

    # assert
    assert "| rpi4 | onnx-int8 | – | 41.2 |" in md and "budget missed" in md
    assert "- p90_ms 41.2 > budget 40 (rpi4, onnx-int8)" in md
    assert "- device failure (rpi4, ptl-int8): timeout" in md


def test_check_budgets_for_one_row_returns_only_the_misses():
    # setup: a report row assembled from stored metrics has no "ok" key and no device
    row = {"format": "onnx", "precision": "int8", "p90_ms": 41.2, "peak_rss_mb": 100.0, "file_mb": 20.0}

    # execute
    misses = check_budgets(row, load_profile("rpi4"), "onnx-int8")
    none = check_budgets(dict(row, p90_ms=12.0), load_profile("rpi4"), "onnx-int8")

    # assert
    assert [m.message for m in misses] == ["p90_ms 41.2 > budget 40 (rpi4, onnx-int8)"]
    assert none == []
