"""Bounds on what sizes work on a device: CPU lists, runs, timeouts, sequence length — refused in one line."""
from __future__ import annotations

import importlib.util
import re
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from edgecompress.cli import main
from edgecompress.config import first_error
from edgecompress.errors import UserInputError
from edgecompress.export.iospec import IOSpec
from edgecompress.limits import BOUNDS, CPU_SETSIZE, cpu_list_problem, parse_cpu_list, request_problem


def _agent():
    import edgecompress.device as device_pkg
    folder = Path(device_pkg.__file__).parent
    sys.path.insert(0, str(folder))  # the agent imports agent_runtimes as a sibling file, as on a device
    try:
        spec = importlib.util.spec_from_file_location("agent_under_test", folder / "agent.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(folder))


@pytest.mark.parametrize("text", ["0-100000000", "0-1024", "99999999999999999999", "4294967296-4294967297",
                                  "1" * 5000, "0-7:2", "4-7,", " 4", "4 - 7", "٣", "0x1", "7-4", "-1", "", "1;id",
                                  "1\n2"])
def test_bad_cpu_lists_are_refused_quickly_in_one_line(text):
    # execute
    t0 = time.perf_counter()
    with pytest.raises(UserInputError) as e:
        parse_cpu_list(text)

    # assert
    assert time.perf_counter() - t0 < 0.05
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--cpu-list") and len(msg) < 200


def test_huge_cpu_list_is_refused_by_bench_before_any_work(tmp_path, capsys):
    # setup: a bare file is enough, the bounds come first
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")

    # execute
    t0 = time.perf_counter()
    code = main(["bench", str(model), "--profile", "host", "--cpu-list", "0-100000000"])

    # assert
    assert code == 2 and time.perf_counter() - t0 < 5
    assert "--cpu-list '0-100000000': CPU 100000000 is above the highest CPU id 1023" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["--runs", "1000000000"], "--runs must be >= 1 and <= 100000"),
    (["--warmup-runs", "99999999"], "--warmup-runs must be >= 0 and <= 10000"),
    (["--seq-len", "100000000"], "--seq-len must be >= 1 and <= 8192"),
    (["--batch", "100000"], "--batch must be >= 1 and <= 256"),
    (["--threads", "100000"], "--threads must be >= 1 and <= 256"),
    (["--timeout-s", "1e30"], "--timeout-s must be > 0 and <= 86400"),
    (["--timeout-s", "nan"], "--timeout-s must be a finite number"),
    (["--min-time-s", "inf"], "--min-time-s must be a finite number"),
])
def test_bench_refuses_numbers_that_would_size_hours_of_device_work(tmp_path, argv, needle, capsys):
    # setup
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")

    # execute
    code = main(["bench", str(model), "--profile", "host", *argv])

    # assert
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("cmd", [["verify"], ["predict"]])
def test_verify_and_predict_bound_threads(tmp_path, cmd, capsys):
    # execute
    code = main([*cmd, str(tmp_path), *(["x"] if cmd == ["predict"] else []), "--threads", "100000"])

    # assert
    assert code == 2 and "--threads must be >= 1 and <= 256" in capsys.readouterr().err


def test_recipe_bench_section_is_bounded():
    # setup
    from edgecompress.recipe import BenchCfg
    from pydantic import ValidationError

    # execute / assert
    with pytest.raises(ValidationError, match=r"runs\n.*must be >= 1 and <= 100000"):
        BenchCfg(runs=10 ** 9)
    with pytest.raises(ValidationError, match=r"timeout_s\n.*must be > 0 and <= 86400"):
        BenchCfg(timeout_s=1e12)


def test_run_agent_refuses_an_out_of_bounds_request_as_data(tmp_path):
    # setup: a caller that skipped the CLI checks
    from edgecompress.device.protocol import AgentRequest
    from edgecompress.device.run import run_agent
    from edgecompress.transports.local import LocalTransport
    req = AgentRequest(tmp_path / "m.onnx", tmp_path / "io.json", "onnxruntime", cpu_list="0-100000000")

    # execute
    with LocalTransport() as t:
        r = run_agent(t, req, 60)

    # assert
    assert r["ok"] is False and r["stage"] == "prepare" and "CPU 100000000" in r["error"]


def test_the_agent_refuses_a_huge_cpu_range_without_building_it():
    # setup
    agent = _agent()

    # execute
    t0 = time.perf_counter()
    with pytest.raises(agent.AgentError, match="not a range of CPU ids"):
        agent.parse_cpu_list("0-100000000")

    # assert
    assert time.perf_counter() - t0 < 0.05 and agent.CPU_SETSIZE == CPU_SETSIZE
    assert agent.parse_cpu_list("4-7,9") == {4, 5, 6, 7, 9}


# ---------------------------------------------------------------- generated CPU lists

_cpu_text = st.one_of(
    st.text(alphabet="0123456789,-", max_size=30),
    st.text(max_size=20),
    st.lists(st.tuples(st.integers(0, 2 ** 40), st.one_of(st.none(), st.integers(0, 2 ** 40))), min_size=1,
             max_size=6).map(lambda parts: ",".join(f"{a}" if b is None else f"{a}-{b}" for a, b in parts)),
)


@settings(max_examples=500, deadline=None)
@given(text=_cpu_text)
def test_generated_cpu_lists_are_accepted_only_when_they_fit_the_cpu_set(text):
    # execute
    try:
        cpus = parse_cpu_list(text)
    except UserInputError as e:
        # assert: refused in one line naming the flag
        assert "\n" not in str(e) and str(e).startswith("--cpu-list") and len(str(e)) < 300
        assert cpu_list_problem(text) is not None
        return
    # assert: accepted only in the taskset syntax, every id fits, and the request may carry it
    assert re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", text)
    assert cpus and all(0 <= c < CPU_SETSIZE for c in cpus)
    agent_cpus = _AGENT.parse_cpu_list(text)
    assert sorted(agent_cpus) == cpus


_AGENT = _agent()


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(BOUNDS)), value=st.one_of(st.integers(-2 ** 70, 2 ** 70),
                                                             st.floats(allow_nan=True, allow_infinity=True)))
def test_generated_numbers_pass_only_within_their_bounds(name, value):
    # setup: the measurement settings are refused when built (BenchSettings), the rest of a request when it is run
    from pydantic import ValidationError

    from edgecompress.device.protocol import AgentRequest, BenchSettings
    lo, hi, inclusive = BOUNDS[name]
    integral = BenchSettings.model_fields.get(name) is not None and BenchSettings.model_fields[name].annotation is int

    # execute
    if name in BenchSettings.model_fields:
        try:
            BenchSettings(**{name: value})
            problem = None
        except ValidationError as e:
            problem = first_error(e, "bench")
    else:
        req = AgentRequest(Path("m"), Path("io.json"), "onnxruntime", **{name: value})
        problem = request_problem(req, 60)

    # assert
    ok = value == value and (lo <= value <= hi) and (inclusive or value > lo)
    ok = ok and (not integral or float(value).is_integer())
    assert (problem is None) == ok and (problem is None or "\n" not in problem)


def test_a_fleet_and_a_connect_timeout_are_bounded(tmp_path, capsys):
    # setup
    from edgecompress.transports.targets import parse_target
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    IOSpec(vocab_size=1100, num_labels=2, max_seq_len=128).write(tmp_path / "io.json")
    targets = [a for i in range(65) for a in ("--target", f"ssh://pi@board{i}")]

    # execute
    code = main(["bench", str(model), "--profile", "host", "--io", str(tmp_path / "io.json"), "--format", "onnx",
                 *targets])

    # assert
    assert code == 2 and "65 --target values; at most 64" in capsys.readouterr().err
    with pytest.raises(UserInputError, match="connect_timeout_s"):
        parse_target("ssh://pi@board?connect_timeout_s=99999999")
