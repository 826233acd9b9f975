"""The contract between the host and an on-device runner: the arguments a runner takes, the files it reads, and
the one JSON line it prints. Failures travel as data ({"ok": false, "error": ...}) so a fleet run keeps the other
devices' numbers when one board is down.

Every runner (the Python agent in agent.py, a native runner) takes the same arguments, relative to its working
directory on the device:

    --model FILE --io io.json --runtime NAME --threads N --warmup-runs N --runs N --min-time-s S
    --batch N --seq-len N [--expected expected.json] [--inputs inputs.json --predict] [--extra-file F]...
    [--cpu-list 4-7] [--tokenizer tokenizer.json --texts texts.json]
"""
from __future__ import annotations

import importlib.resources
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pydantic import Field, field_validator

from edgecompress.config import Cfg
from edgecompress.limits import field_problem

# Under qemu-user (the qemu-arm64 target) time runs 10-50x slow and RSS includes the emulator's JIT: these are not
# device figures, so `bench` reports their budgets as skipped and `fit` does not judge them; file size and accuracy
# still hold.
EMULATION_SKEWED = ("p90_ms", "load_ms", "peak_rss_mb")

AGENT_NAME = "agent.py"  # the Python agent; the host runs `python3 agent.py ARGS` in the run directory
AGENT_FILES = (AGENT_NAME, "agent_io.py", "agent_runtimes.py")  # what the Python agent needs beside it on the device


def agent_path(name: str = AGENT_NAME) -> Path:
    """A file of the Python agent as shipped in the package."""
    return Path(str(importlib.resources.files("edgecompress") / "device" / name))


class BenchSettings(Cfg):
    """How one file is measured on a device: the recipe's `bench:` section, the `bench` command's flags, the fit
    search and every runner read these defaults from here (the runners' own argument defaults are checked against
    them by tests/device/test_bench_settings.py); the bounds are limits.BOUNDS, which keep a typo from sizing hours
    of work on a device."""
    threads: int = 1
    batch: int = 1
    seq_len: int = Field(128, description="tokens per row of the random inputs")
    warmup_runs: int = 5
    runs: int = 50
    timeout_s: float = Field(600, description="for the whole run on the device")

    @field_validator("threads", "batch", "seq_len", "warmup_runs", "runs", "timeout_s")
    @classmethod
    def _bounded(cls, v, info):
        problem = field_problem(info.field_name, v)
        if problem:
            raise ValueError(problem)
        return v

    def but(self, **changes) -> "BenchSettings":
        """These settings with some changed, validated again (None leaves a setting as it is)."""
        return BenchSettings(**{**self.model_dump(), **{k: v for k, v in changes.items() if v is not None}})


@dataclass(frozen=True)
class AgentRequest:
    """One measurement (or prediction) of one model file: what to push and which arguments to pass."""
    model_file: Path
    io_json: Path
    runtime: str
    bench: BenchSettings = BenchSettings()
    min_time_s: float = 0.0
    expected_json: Optional[Path] = None
    inputs_json: Optional[Path] = None
    predict: bool = False
    cpu_list: Optional[str] = None
    extra_files: tuple[Path, ...] = field(default_factory=tuple)
    # text -> label timing: the bundle's tokenizer.json and a JSON list of texts (the Python agent only: native
    # runners time the model, tokenization is the app's own code there).
    tokenizer_json: Optional[Path] = None
    texts_json: Optional[Path] = None

    def files(self) -> list[tuple[Path, str]]:
        """(local path, name on the device) of every file the runner reads."""
        out = [(Path(self.model_file), Path(self.model_file).name), (Path(self.io_json), "io.json")]
        out += [(Path(p), Path(p).name) for p in self.extra_files]
        if self.expected_json is not None:
            out.append((Path(self.expected_json), "expected.json"))
        if self.inputs_json is not None:
            out.append((Path(self.inputs_json), "inputs.json"))
        if self.tokenizer_json is not None and self.texts_json is not None:
            out += [(Path(self.tokenizer_json), "tokenizer.json"), (Path(self.texts_json), "texts.json")]
        return out

    def argv(self) -> list[str]:
        """The runner's arguments. Every value follows its flag as a separate word and names a file the host
        chose, so no user-supplied text can become an option of its own."""
        b = self.bench
        args = ["--model", Path(self.model_file).name, "--io", "io.json", "--runtime", self.runtime,
                "--threads", str(b.threads), "--warmup-runs", str(b.warmup_runs), "--runs", str(b.runs),
                "--batch", str(b.batch), "--seq-len", str(b.seq_len), "--min-time-s", str(self.min_time_s)]
        for p in self.extra_files:
            args += ["--extra-file", Path(p).name]
        if self.expected_json is not None:
            args += ["--expected", "expected.json"]
        if self.inputs_json is not None:
            args += ["--inputs", "inputs.json"]
        if self.predict:
            args.append("--predict")
        if self.cpu_list:
            args += ["--cpu-list", self.cpu_list]
        if self.tokenizer_json is not None and self.texts_json is not None:
            args += ["--tokenizer", "tokenizer.json", "--texts", "texts.json"]
        return args


def parse_output(stdout: str) -> Optional[dict]:
    """The runner's one JSON line (the last line that parses as a JSON object), or None."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


def failure(error: str, stage: str, transport_name: str, t0: float, res=None) -> dict:
    """A failed run as data: what went wrong, at which stage (connect, push, exec, agent), on which device."""
    out = {"ok": False, "error": error, "stage": stage, "transport": transport_name,
           "wall_s": round(time.perf_counter() - t0, 3)}
    if res is not None:
        out.update(returncode=res.returncode, timed_out=res.timed_out, stderr_tail=res.stderr_tail())
    return out
