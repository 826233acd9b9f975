"""The on-device bench agent, run as a subprocess exactly as on a device (through the local transport)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgecompress.bench.harness import bench_file
from edgecompress.device.protocol import agent_path

TIMING_KEYS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms")


def test_agent_on_tiny_onnx_reports_every_field(tiny_model):
    # setup
    model, io = tiny_model

    # execute
    r = bench_file(model, io, "onnxruntime", threads=1, warmup_runs=2, runs=15, batch=2, seq_len=16)

    # assert
    assert r["ok"] is True, r
    for k in (*TIMING_KEYS, "load_ms", "import_ms", "first_inference_ms", "peak_rss_mb", "file_mb", "runtime_version",
              "python", "machine", "transport", "wall_s"):
        assert r[k] is not None, k
    assert r["runs"] == 15 and r["threads"] == 1 and (r["batch"], r["seq_len"]) == (2, 16)
    assert r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert r["runtime"] == "onnxruntime" and r["transport"] == "local"
    assert r["env"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert r["file_mb"] == pytest.approx(model.stat().st_size / 2 ** 20, abs=1e-3)
    # a Python process with onnxruntime loaded is tens to hundreds of MiB: in kB it would read > 10,000
    assert 10 < r["peak_rss_mb"] < 4096


def test_agent_prints_exactly_one_json_line(tiny_model, tmp_path):
    # setup
    model, io = tiny_model

    # execute
    p = subprocess.run([sys.executable, str(agent_path()), "--model", str(model), "--io", str(io), "--runtime",
                        "onnxruntime", "--runs", "3", "--warmup-runs", "0", "--min-time-s", "0.2"],
                       capture_output=True, text=True, timeout=120)

    # assert
    lines = p.stdout.strip().splitlines()
    assert p.returncode == 0 and len(lines) == 1
    r = json.loads(lines[0])
    assert r["runs"] > 3 and r["measure_s"] >= 0.2  # --min-time-s keeps running past --runs


def _expected(tmp_path, logits, **extra):
    p = tmp_path / "expected.json"
    p.write_text(json.dumps({"seed": 3, "batch": 2, "seq_len": 8, "logits": logits, **extra}))
    return p


def _reference_logits(model, io, seed=3, batch=2, seq_len=8):
    import numpy as np
    import onnxruntime as ort

    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_agent_ref", agent_path())
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)
    feed = agent.random_inputs(json.loads(io.read_text()), batch, seq_len, seed)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return sess.run(None, {k: np.asarray(v, dtype=np.int64) for k, v in feed.items()})[0].tolist()


def test_expected_outputs_that_match_pass(tiny_model, tmp_path):
    # setup
    model, io = tiny_model
    expected = _expected(tmp_path, _reference_logits(model, io), atol=1e-4)

    # execute
    r = bench_file(model, io, "onnxruntime", runs=3, warmup_runs=0, expected_json=expected)

    # assert
    assert r["ok"] is True, r
    assert r["expected_check"]["max_abs_diff"] <= 1e-4 and r["expected_check"]["argmax_agreement"] == 1.0


def test_expected_outputs_that_differ_are_an_error_not_a_number(tiny_model, tmp_path):
    # setup
    model, io = tiny_model
    wrong = [[v + 1.0 for v in row] for row in _reference_logits(model, io)]
    expected = _expected(tmp_path, wrong, atol=1e-3)

    # execute
    r = bench_file(model, io, "onnxruntime", runs=3, warmup_runs=0, expected_json=expected)

    # assert
    assert r["ok"] is False and "p50_ms" not in r
    assert "output mismatch: max abs diff" in r["error"]


def test_runtime_returning_zeros_is_reported(tiny_model, zero_model, tmp_path):
    # setup: a model whose head is all zeros stands in for tflite-runtime int8 on numpy 2
    model, io = tiny_model
    expected = _expected(tmp_path, _reference_logits(model, io), min_argmax_agreement=0.5)

    # execute
    r = bench_file(zero_model, io, "onnxruntime", runs=3, warmup_runs=0, expected_json=expected)

    # assert
    assert r["ok"] is False and "all zeros" in r["error"]


def test_unloadable_model_is_a_failure_dict(tiny_model, tmp_path):
    # setup
    _, io = tiny_model
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")

    # execute
    r = bench_file(bad, io, "onnxruntime", runs=2, warmup_runs=0)

    # assert
    assert r["ok"] is False and r["stage"] == "agent"
    assert "InvalidProtobuf" in r["error"] or "protobuf" in r["error"].lower()


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity"), reason="needs os.sched_setaffinity")
def test_cpu_list_pins_the_agent(tiny_model):
    # setup
    model, io = tiny_model

    # execute
    r = bench_file(model, io, "onnxruntime", runs=2, warmup_runs=0, cpu_list="0")

    # assert
    assert r["ok"] is True and r["cpu_list"] == [0]
