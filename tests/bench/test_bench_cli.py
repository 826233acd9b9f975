"""bench_fleet across transports and the `bench` / `check` commands on an export-artifact folder."""
from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import pytest

from edgecompress.bench.harness import BenchItem, bench_fleet
from edgecompress.cli import main
from edgecompress.transports.reach import LocalReach, SshReach
from tests._device import write_export_manifest


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def artifact(tmp_path, tiny_model):
    """An export artifact folder as the pipeline writes it: manifest.json + model + io.json."""
    model, io = tiny_model
    d = tmp_path / "export-0123456789abcdef"
    d.mkdir()
    shutil.copy(model, d / "student.onnx")
    shutil.copy(io, d / "io.json")
    return write_export_manifest(d, "onnx", "int8", metrics={"accuracy": 0.84, "accuracy_drop": 0.01})


def test_bench_fleet_runs_targets_concurrently_and_keeps_failures_per_device(tiny_model, sshd):
    # setup
    model, io = tiny_model
    items = [BenchItem("onnx-fp32", model, io, "onnxruntime", meta={"format": "onnx"}),
             BenchItem("onnx-int8", model, io, "onnxruntime", threads=1)]
    down = SshReach(host="127.0.0.1", user="x", port=_free_port(), known_hosts=sshd.known_hosts, connect_timeout_s=2)
    targets = {"host": LocalReach(), "loopback-ssh": sshd, "down": down}

    # execute
    out = bench_fleet(items, targets, runs=5, warmup_runs=1, seq_len=16)

    # assert
    assert set(out) == {"host", "loopback-ssh", "down"}
    assert [r["ok"] for r in out["host"]] == [True, True]
    assert [r["ok"] for r in out["loopback-ssh"]] == [True, True]
    assert [r["ok"] for r in out["down"]] == [False, False] and out["down"][1]["stage"] == "connect"
    assert out["host"][0]["device"] == "host" and out["host"][0]["artifact"] == "onnx-fp32"
    assert out["host"][0]["format"] == "onnx"


def test_cli_bench_artifact_within_budget_exits_0_and_writes_reports(artifact, tmp_path, capsys):
    # setup
    out, junit, md = tmp_path / "r.json", tmp_path / "j.xml", tmp_path / "s.md"

    # execute
    code = main(["bench", str(artifact), "--profile", "host", "--runs", "5", "--warmup-runs", "1", "--seq-len", "16",
                 "--out", str(out), "--junit", str(junit), "--summary-md", str(md)])

    # assert
    assert code == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    (r,) = doc["results"]
    assert (r["device"], r["artifact"], r["precision"], r["accuracy_drop"]) == ("host", "onnx-int8", "int8", 0.01)
    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert {c.get("name") for c in cases} == {"p90_ms", "peak_rss_mb", "file_mb", "load_ms", "accuracy_drop"}
    assert "All 5 checks passed" in md.read_text()


def test_cli_bench_over_budget_exits_1_naming_the_budget(artifact, tmp_path, capsys):
    # setup: a user profile whose p90 budget no machine meets
    prof = tmp_path / "tight.yaml"
    prof.write_text("name: tight\narch: x86_64\nos: linux\ncores: {big: 2}\nmemory_mb: 1024\n"
                    "runtimes: {onnx: {runtime: onnxruntime, threads: 1}}\n"
                    "budgets: {onnx-int8: {p90_ms: 0.000001, file_mb: 100}}\n")

    # execute
    code = main(["bench", str(artifact), "--profile", str(prof), "--runs", "3", "--warmup-runs", "0"])

    # assert
    err = capsys.readouterr().err
    assert code == 1
    assert "budget missed: p90_ms " in err and "> budget 0 (tight, onnx-int8)" in err
    assert "file_mb" not in err


def test_cli_bench_device_failure_exits_3(artifact, tmp_path, capsys):
    # setup
    url = f"ssh://nobody@127.0.0.1:{_free_port()}?connect_timeout_s=2&known_hosts={tmp_path / 'kh'}"

    # execute
    code = main(["bench", str(artifact), "--profile", "rpi4", "--target", url, "--runs", "2"])

    # assert
    assert code == 3 and "device failure (rpi4, onnx-int8)" in capsys.readouterr().err


def test_cli_bare_model_needs_io_and_format(tiny_model, capsys):
    # setup
    model, io = tiny_model

    # execute
    code = main(["bench", str(model), "--profile", "host"])
    ok = main(["bench", str(model), "--profile", "host", "--io", str(io), "--format", "onnx", "--runs", "2"])

    # assert
    assert code == 2 and "--io io.json and --format" in capsys.readouterr().err
    assert ok == 0


def test_cli_check_rechecks_results_and_baseline(artifact, tmp_path, capsys):
    # setup
    out = tmp_path / "r.json"
    assert main(["bench", str(artifact), "--profile", "host", "--runs", "3", "--out", str(out)]) == 0
    base = json.loads(out.read_text())
    base["results"][0]["file_mb"] = base["results"][0]["file_mb"] / 2  # the new file is 100% bigger than baseline
    (tmp_path / "base.json").write_text(json.dumps(base))

    # execute
    same = main(["check", str(out), "--profile", "host"])
    regressed = main(["check", str(out), "--profile", "host", "--baseline", str(tmp_path / "base.json"),
                      "--max-regression-pct", "50"])

    # assert
    err = capsys.readouterr().err
    assert same == 0 and regressed == 1
    assert "regression missed: file_mb" in err and "+100.0% vs baseline" in err


@pytest.mark.parametrize("argv,needle", [
    (["--timeout-s", "-1"], "--timeout-s must be > 0"),
    (["--seq-len", "4096"], "exceeds onnx-int8's exported max_seq_len 128"),
    (["--format", "onnx"], "--io and --format describe a bare model file"),
])
def test_bench_refuses_bad_arguments_before_touching_a_device(artifact, argv, needle, capsys):
    # execute
    code = main(["bench", str(artifact), "--profile", "host", *argv])
    # assert
    assert code == 2 and needle in capsys.readouterr().err


def test_check_refuses_a_results_file_with_a_string_for_a_number(tmp_path, capsys):
    # setup
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": [{"artifact": "onnx-int8", "ok": True, "p90_ms": "fast"}]}))
    # execute
    code = main(["check", str(path), "--profile", "host"])
    # assert
    assert code == 2 and "results[0].p90_ms is 'fast', not a number" in capsys.readouterr().err
