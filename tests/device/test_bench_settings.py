"""The measurement defaults are declared once (BenchSettings); the two runners that cannot import it (the Python
agent runs alone on the device, the native runner is C++) must carry the same numbers."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgecompress.device import agent
from edgecompress.device.protocol import AgentRequest, BenchSettings

NATIVE = Path(__file__).resolve().parents[2] / "targets" / "native"


def _cpp_defaults() -> dict[str, int]:
    text = (NATIVE / "runner_common.h").read_text()
    found = dict(re.findall(r"kDefault(\w+) = (\d+)", text))
    return {"threads": int(found["Threads"]), "warmup_runs": int(found["WarmupRuns"]), "runs": int(found["Runs"]),
            "batch": int(found["Batch"]), "seq_len": int(found["SeqLen"])}


def test_python_agent_defaults_are_bench_settings():
    # setup
    declared = BenchSettings()
    # execute
    args = agent.parse_args(["--model", "m.onnx", "--io", "io.json", "--runtime", "onnxruntime"])
    # assert
    assert {k: getattr(args, k) for k in ("threads", "warmup_runs", "runs", "batch")} == \
        declared.model_dump(include={"threads", "warmup_runs", "runs", "batch"})
    assert agent.RUN_DEFAULTS == declared.model_dump(exclude={"timeout_s"})


def test_native_runner_defaults_are_bench_settings():
    # setup
    declared = BenchSettings().model_dump(exclude={"timeout_s"})
    # execute
    native = _cpp_defaults()
    # assert: and the runner really uses the declared sequence default, not a literal of its own
    assert native == declared
    assert "std::min(kDefaultSeqLen" in (NATIVE / "pte_runner.cpp").read_text()


def test_request_argv_carries_every_setting():
    # setup
    s = BenchSettings(threads=3, batch=2, seq_len=17, warmup_runs=4, runs=9)
    # execute
    argv = AgentRequest(Path("m.onnx"), Path("io.json"), "onnxruntime", s).argv()
    # assert
    got = {argv[i].lstrip("-").replace("-", "_"): argv[i + 1] for i in range(0, len(argv) - 1, 2)
           if argv[i].startswith("--")}
    assert {k: int(got[k]) for k in ("threads", "batch", "seq_len", "warmup_runs", "runs")} == \
        s.model_dump(exclude={"timeout_s"})


@pytest.mark.parametrize("field,value", [("runs", 0), ("runs", 10**9), ("seq_len", 10**6), ("threads", 0),
                                         ("timeout_s", 0), ("warmup_runs", -1), ("batch", 10**6)])
def test_settings_refuse_values_that_would_size_unbounded_work(field, value):
    # execute / assert
    with pytest.raises(ValueError):
        BenchSettings(**{field: value})
