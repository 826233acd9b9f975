"""The native ExecuTorch runner (targets/native, built by edgecompress.device.native): the Python agent's protocol and
logits on the same .pte and inputs at a fraction of its memory; the aarch64 bundle runs under qemu-user with no
sysroot and agrees with the host.

Bundles are built into the real cache (native_home(), keyed by executorch version x ABI x source hash, renamed into
place when finished), so a second run reuses them: host ~5 s, aarch64 ~10 s plus a one-off ~18 MB wheel download.
One tiny int8 .pte is lowered per module (~20 s), hence the slow mark on the tests that need it.
"""
from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgecompress.device import native
from edgecompress.errors import UserInputError

slow = pytest.mark.slow
MAX_SEQ = 64
SHAPES = [17, 41, MAX_SEQ]  # batch 1 (the .pte default max_batch), sequence lengths other than the export's 32
LOGITS_ATOL = 1e-5          # same runtime, same file, same inputs: only JSON rounding (6 decimals) may differ
ARM_ATOL = 1e-3             # XNNPACK's arm64 int8 kernels vs x86's (DESIGN.md: within 0.004 on the default model)


def _protocol_args(model: Path, io: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--io", str(io), "--runtime", "executorch", "--threads", "1",
            "--warmup-runs", "1", "--runs", "5", *extra]


def _run(argv: list[str], env: dict | None = None) -> tuple[int, list[str], dict]:
    """(exit code, stdout lines, the one JSON line parsed)."""
    p = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    lines = p.stdout.splitlines()
    assert lines, f"no stdout (exit {p.returncode}): {p.stderr[-500:]}"
    return p.returncode, lines, json.loads(lines[-1])


def _agent_argv() -> list[str]:
    return [sys.executable, importlib.util.find_spec("edgecompress.device.agent").origin]


def _max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    assert [len(r) for r in a] == [len(r) for r in b]
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


@pytest.fixture(scope="module")
def host_bundle() -> Path:
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed (apt-get install g++): the native runner cannot be built")
    return native.build_runner()


@pytest.fixture(scope="module")
def tiny_pte(tiny_bert, tmp_path_factory):
    """(model.pte, io.json, inputs.json): the tiny BERT lowered to int8 XNNPACK, and samples of three lengths,
    the last one padded, so the mask is exercised."""
    from edgecompress.export.base import IO_FILE, IOSpec
    from edgecompress.recipe import QuantSpec
    from edgecompress.registry import EXPORTERS
    out = tmp_path_factory.mktemp("pte-int8")
    io = IOSpec(vocab_size=1100, num_labels=2, max_seq_len=MAX_SEQ, example_batch=2, example_seq_len=32)
    result = EXPORTERS.get("pte")().export(tiny_bert, io, QuantSpec(per_channel=True), None, out)
    rng = random.Random(7)
    samples = []
    for n in SHAPES:
        keep = n - 5 if n == MAX_SEQ else n
        ids = [rng.randrange(1000, 1100) if i < keep else 0 for i in range(n)]
        samples.append({"input_ids": [ids], "attention_mask": [[1 if i < keep else 0 for i in range(n)]]})
    inputs = out / "inputs.json"
    inputs.write_text(json.dumps(samples))
    return Path(result.file), Path(result.file).parent / IO_FILE, inputs


@pytest.fixture(scope="module")
def agent_result(tiny_pte):
    model, io, inputs = tiny_pte
    code, _, out = _run(_agent_argv() + _protocol_args(model, io, "--inputs", str(inputs), "--predict"))
    assert code == 0 and out["ok"], out
    return out


@pytest.fixture(scope="module")
def native_result(host_bundle, tiny_pte):
    model, io, inputs = tiny_pte
    code, lines, out = _run(native.launch_argv(str(host_bundle))
                            + _protocol_args(model, io, "--inputs", str(inputs), "--predict"))
    return code, lines, out


# ---------------------------------------------------------------- fast: build and failures

def test_missing_compiler_names_the_apt_package(monkeypatch):
    # setup
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    cross = "aarch64" if native.host_abi() != "aarch64" else "x86_64"
    # execute / assert: checked before anything is downloaded or compiled
    with pytest.raises(UserInputError, match=rf"apt-get install {re.escape(native.ABIS[cross].cross_package)}\)"):
        native.build_runner(cross)
    with pytest.raises(UserInputError, match=r"apt-get install g\+\+\)"):
        native.build_runner()
    with pytest.raises(UserInputError, match="no native runner for ABI 'riscv64'"):
        native.build_runner("riscv64")


def test_old_builds_are_pruned_to_the_most_recently_used(tmp_path, monkeypatch):
    # setup: four finished builds of one ABI used at different times, an unfinished one, another ABI's
    monkeypatch.setenv("EDGECOMPRESS_HOME", str(tmp_path))
    home = native.native_home()
    for i, key in enumerate(["aaa", "bbb", "ccc", "ddd"]):
        d = home / f"executorch-1.0-x86_64-{key}"
        d.mkdir(parents=True)
        (d / native.RECORD).write_text("{}")
        os.utime(d / native.RECORD, (1000 + i, 1000 + i))
    (home / "executorch-1.0-x86_64-eee").mkdir()                          # no record: not a finished build
    (home / "executorch-1.0-aarch64-aaa").mkdir()
    (home / "executorch-1.0-aarch64-aaa" / native.RECORD).write_text("{}")
    # execute
    gone = native.prune_builds("x86_64")
    # assert: the two most recently used stay; nothing else is touched
    assert sorted(p.name for p in gone) == ["executorch-1.0-x86_64-aaa", "executorch-1.0-x86_64-bbb"]
    assert sorted(p.name for p in home.iterdir()) == ["executorch-1.0-aarch64-aaa", "executorch-1.0-x86_64-ccc",
                                                      "executorch-1.0-x86_64-ddd", "executorch-1.0-x86_64-eee"]


def test_build_is_cached_and_recorded(host_bundle):
    # execute
    again = native.build_runner()
    record = native.build_record(host_bundle)
    # assert
    assert again == host_bundle
    assert record["abi"] == native.host_abi() and record["executorch"] == native.executorch_version()
    assert {native.RUNNER, native.LAUNCHER, "libexecutorch.so", record["loader"], "libc.so.6"} <= set(record["files"])
    assert all(len(h) == 64 for h in record["files"].values()) and record["bundle_mb"] > 1
    assert [rel for _, rel in native.bundle_files(host_bundle)][0].startswith("native/")


def test_bad_arguments_are_one_json_line(host_bundle, tmp_path):
    # setup
    io = tmp_path / "io.json"
    io.write_text(json.dumps({"vocab_size": 1100, "input_names": ["input_ids", "attention_mask"]}))
    launch = native.launch_argv(str(host_bundle))
    # execute
    wrong_runtime = _run(launch + ["--model", str(io), "--io", str(io), "--runtime", "onnxruntime"])
    no_model = _run(launch + ["--model", str(tmp_path / "none.pte"), "--io", str(io), "--runtime", "executorch"])
    # assert
    for code, lines, out in (wrong_runtime, no_model):
        assert len(lines) == 1 and out["ok"] is False and code != 0
    assert wrong_runtime[0] == 2 and "invalid choice 'onnxruntime'" in wrong_runtime[2]["error"]
    assert no_model[0] == 1 and "not found" in no_model[2]["error"]


# ---------------------------------------------------------------- slow: one tiny .pte, both runners

@slow
def test_native_runner_speaks_the_protocol_with_the_agents_logits(native_result, agent_result):
    # setup
    code, lines, out = native_result
    # assert
    assert code == 0 and len(lines) == 1 and out["ok"], out
    assert out["runner"] == "native" and out["runtime"] == "executorch" and out["inputs"] == "samples"
    assert out["agent_version"] == agent_result["agent_version"]
    missing = {k for k in agent_result if k not in out} - {"python"}
    assert not missing, f"keys the agent reports and the native runner does not: {sorted(missing)}"
    assert out["predictions"] == agent_result["predictions"]
    assert _max_diff(out["logits"], agent_result["logits"]) <= LOGITS_ATOL
    assert out["runtime_threads"]["threadpool_threads"] == 1 and out["runs"] >= 5
    print(f"native vs Python agent, tiny int8: p50 {out['p50_ms']} vs {agent_result['p50_ms']} ms, peak RSS "
          f"{out['peak_rss_mb']} vs {agent_result['peak_rss_mb']} MiB, load {out['load_ms']} vs "
          f"{agent_result['load_ms']} ms")
    assert 0 < out["peak_rss_mb"] < agent_result["peak_rss_mb"]  # no torch, no Python: ~9 vs ~360 MiB here


@slow
def test_expected_check_passes_and_a_wrong_expected_fails(host_bundle, tiny_pte, agent_result, tmp_path):
    # setup
    model, io, inputs = tiny_pte
    sample = json.loads(inputs.read_text())[0]
    good, wrong, seed_only = tmp_path / "good.json", tmp_path / "wrong.json", tmp_path / "seed.json"
    good.write_text(json.dumps({"inputs": sample, "logits": agent_result["logits"][:1], "atol": 1e-4}))
    wrong.write_text(json.dumps({"inputs": sample, "logits": [[v + 1.0 for v in agent_result["logits"][0]]]}))
    seed_only.write_text(json.dumps({"seed": 0, "batch": 1, "seq_len": 16, "logits": [[0.0, 0.0]]}))
    launch = native.launch_argv(str(host_bundle))
    # execute
    ok = _run(launch + _protocol_args(model, io, "--expected", str(good)))
    bad = _run(launch + _protocol_args(model, io, "--expected", str(wrong)))
    unseeded = _run(launch + _protocol_args(model, io, "--expected", str(seed_only)))
    # assert
    assert ok[0] == 0 and ok[2]["ok"] and ok[2]["expected_check"]["max_abs_diff"] <= LOGITS_ATOL
    assert ok[2]["expected_check"]["argmax_agreement"] == 1.0
    assert ok[2]["inputs"].startswith("random(seed=0") and "splitmix64" in ok[2]["inputs"]
    assert bad[0] == 1 and len(bad[1]) == 1 and bad[2]["ok"] is False and "output mismatch" in bad[2]["error"]
    assert unseeded[2]["ok"] is False and "no inputs" in unseeded[2]["error"]


@slow
def test_too_long_input_is_an_error_naming_the_bound(host_bundle, tiny_pte):
    # setup
    model, io, _ = tiny_pte
    # execute
    code, lines, out = _run(native.launch_argv(str(host_bundle)) + _protocol_args(model, io, "--seq-len", "100"))
    # assert
    assert code == 1 and len(lines) == 1 and out["ok"] is False
    assert f"upper bounds [1, {MAX_SEQ}]" in out["error"]


@slow
def test_aarch64_bundle_runs_under_qemu_without_sysroot(native_result, tiny_pte, tmp_path):
    # setup
    missing = [(tool, pkg) for tool, pkg in (("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu"),
                                             ("qemu-aarch64-static", "qemu-user-static")) if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(t for t, _ in missing)} not installed "
                    f"(apt-get install {' '.join(p for _, p in missing)})")
    bundle = native.build_runner("aarch64")
    moved = shutil.copytree(bundle, tmp_path / "device" / "native")  # relocatable: nothing points into the cache
    model, io, inputs = tiny_pte
    # No -L and no QEMU_LD_PREFIX: every library comes from the bundle. cortex-a72, not max (wrong int8 logits).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QEMU_", "LD_"))}
    env["EDGECOMPRESS_EMULATOR"] = "qemu-aarch64-static -cpu cortex-a72"
    # execute
    code, lines, out = _run(native.launch_argv(str(moved), "aarch64", ["qemu-aarch64-static", "-cpu", "cortex-a72"])
                            + _protocol_args(model, io, "--inputs", str(inputs), "--predict"), env=env)
    # assert
    assert code == 0 and len(lines) == 1 and out["ok"], out
    assert out["machine"] == "aarch64" and out["emulated"] is True and out["runner"] == "native"
    host = native_result[2]
    assert _max_diff(out["logits"], host["logits"]) <= ARM_ATOL
    assert out["predictions"] == host["predictions"]
    print(f"aarch64 bundle {native.build_record(bundle)['bundle_mb']} MiB; under qemu cortex-a72: p50 "
          f"{out['p50_ms']} ms, peak RSS {out['peak_rss_mb']} MiB")


def test_bench_file_stages_the_native_bundle_once_per_device_session(host_bundle, tiny_pte):
    # setup
    from edgecompress.bench.harness import bench_file
    from edgecompress.transports.local import LocalTransport
    model, io, _ = tiny_pte
    # execute: two benches on one transport
    with LocalTransport() as t:
        first = bench_file(model, io, "executorch", transport=t, runs=3, warmup_runs=1, seq_len=16, runner="native")
        second = bench_file(model, io, "executorch", transport=t, runs=3, warmup_runs=1, seq_len=16, runner="native")
        staged = [p.name for p in Path(t.workdir).iterdir() if p.name.startswith("native-")]
    # assert: measured natively, and the bundle pushed once
    assert first["ok"] and second["ok"], (first, second)
    assert first["runner"] == "native" and first["peak_rss_mb"] < 100 and first["p50_ms"] > 0
    assert len(staged) == 1
    assert second["push_s"] < first["push_s"]


def test_run_agent_stages_the_arm64_bundle_on_the_emulated_target(tiny_pte, tmp_path):
    # setup: the native runner needs no rootfs, only a workdir: an empty stand-in for it
    if shutil.which("qemu-aarch64-static") is None or shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("qemu-user-static or g++-aarch64-linux-gnu not installed (see .ci/install-system-deps)")
    from edgecompress.bench.harness import bench_file
    from edgecompress.transports.base import make_transport
    from edgecompress.transports.qemu import STAMP
    from edgecompress.transports.reach import QemuReach
    (tmp_path / "rootfs" / "tmp").mkdir(parents=True)
    (tmp_path / "rootfs" / STAMP).write_text("stand-in")
    model, io, _ = tiny_pte
    # execute: pushed through the transport (modes kept: the loader must stay executable), run under qemu
    with make_transport(QemuReach(rootfs=str(tmp_path / "rootfs"))) as t:
        r = bench_file(model, io, "executorch", transport=t, runs=2, warmup_runs=0, seq_len=16, runner="native")
    # assert
    assert r["ok"], r
    assert r["runner"] == "native" and r["machine"] == "aarch64" and r["emulated"] is True


# ---------------------------------------------------------------- a cached bundle is checked before it is used

@pytest.fixture
def fake_builds(tmp_path, monkeypatch):
    """build_runner with a stand-in compile (two files and a launcher), counting builds, in a private cache."""
    monkeypatch.setenv("EDGECOMPRESS_HOME", str(tmp_path))
    monkeypatch.setattr(native, "executorch_version", lambda: "9.9")
    monkeypatch.setattr(native, "compiler_for", lambda abi: "g++")
    builds = []

    def compile_into(folder, abi, version):
        builds.append(folder)
        (folder / native.RUNNER).write_bytes(b"\x7fELF runner")
        (folder / "libexecutorch.so").write_bytes(b"lib")
        native._write_launcher(folder, abi)
        return {"files": {f.name: native._sha256(f) for f in sorted(folder.iterdir())}}
    monkeypatch.setattr(native, "_compile_into", compile_into)
    return builds


@pytest.mark.parametrize("tamper", [
    lambda b: (b / native.LAUNCHER).write_text("#!/bin/sh\ntouch /tmp/pwned\n"),   # an edited launcher
    lambda b: (b / "libexecutorch.so").write_bytes(b""),                         # a truncated library
    lambda b: (b / "libevil.so").write_bytes(b"x"),                              # a file nobody built
    lambda b: (b / native.RUNNER).unlink(),                                      # a missing file
    lambda b: (b / native.RECORD).write_text("{not json"),                       # an unreadable record
])
def test_a_tampered_cached_bundle_is_rebuilt_not_used(fake_builds, tamper, capsys):
    # setup
    first = native.build_runner()
    good = native.build_record(first)["files"]
    tamper(first)

    # execute
    again = native.build_runner()

    # assert: rebuilt (said in one line), the new bundle matches its record, and only recorded files get pushed
    err = capsys.readouterr().err.strip().splitlines()
    assert len(fake_builds) == 2 and again == first
    assert len(err) == 1 and "native runner cache" in err[0] and "rebuilding" in err[0]
    assert native.bundle_problem(again) is None and native.build_record(again)["files"] == good
    assert sorted(rel.split("/", 1)[1] for _, rel in native.bundle_files(again)) == sorted(good)


def test_an_intact_cached_bundle_is_reused_silently(fake_builds, capsys):
    # setup
    first = native.build_runner()

    # execute
    again = native.build_runner()

    # assert
    assert again == first and len(fake_builds) == 1 and capsys.readouterr().err == ""
