"""Run the bench agent on a device and bring its one JSON line back as a dict.

bench_file pushes the agent, the model (+ its sidecars, e.g. ONNX external data), io.json and optionally the
expected-output file into a fresh sub-directory of the transport's workdir, runs `python bench_agent.py ...`
there and parses the JSON. Every failure (unreachable device, missing runtime, timeout, wrong outputs) comes
back as {"ok": False, "error": ...}: a fleet run keeps the other devices' numbers.
"""
from __future__ import annotations

import importlib.resources
import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

from edgecompress.targets.base import ExecResult, Transport, make_transport

AGENT_NAME = "bench_agent.py"
_run_ids = itertools.count()


def agent_path() -> Path:
    """The agent as shipped in the package (edgecompress/resources/targets -> top-level targets/)."""
    return Path(str(importlib.resources.files("edgecompress") / "resources" / "targets" / AGENT_NAME))


def onnx_sidecars(model_file: Path) -> list[Path]:
    """External-data files an .onnx needs beside it (torch.onnx.export's dynamo path writes `<model>.onnx.data`).

    Read from the model's initializers when onnx is installed (the location is whatever the exporter chose),
    else the `<model>.data` convention.
    """
    model_file = Path(model_file)
    if model_file.suffix != ".onnx":
        return []
    try:
        import onnx
        from onnx.external_data_helper import _get_all_tensors
        m = onnx.load(str(model_file), load_external_data=False)
        locations = set()
        for t in _get_all_tensors(m):
            if t.data_location == onnx.TensorProto.EXTERNAL:
                locations.update(e.value for e in t.external_data if e.key == "location")
        return [model_file.parent / loc for loc in sorted(locations) if (model_file.parent / loc).is_file()]
    except Exception:  # noqa: BLE001 - onnx missing or an unreadable model: fall back to the naming convention
        guess = model_file.with_name(model_file.name + ".data")
        return [guess] if guess.is_file() else []


def _failure(error: str, res: Optional[ExecResult], transport: Transport, stage: str, t0: float) -> dict:
    out = {"ok": False, "error": error, "stage": stage, "transport": transport.describe(),
           "wall_s": round(time.perf_counter() - t0, 3)}
    if res is not None:
        out.update(returncode=res.returncode, timed_out=res.timed_out, stderr_tail=res.stderr_tail())
    return out


def parse_agent_output(stdout: str) -> Optional[dict]:
    """The agent's one JSON line (the last line that parses as a JSON object), or None."""
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


def bench_file(model_file: Path, io_json: Path, runtime: str, *, threads: int = 1, warmup_runs: int = 5,
               runs: int = 50, batch: int = 1, seq_len: int = 128, transport: Optional[Transport] = None,
               timeout_s: float = 600, expected_json: Optional[Path] = None, min_time_s: float = 0.0,
               extra_files: Optional[Sequence[Path]] = None, inputs_json: Optional[Path] = None,
               cpu_list: Optional[str] = None) -> dict:
    """Benchmark one model file on one device; returns the agent's dict (+ transport, wall_s) or a failure dict.

    transport=None runs on this machine in a temp dir (cleaned up); a given transport is left open, so a caller
    benching several files on one device reuses its connection/workdir. extra_files=None finds ONNX sidecars.
    """
    t0 = time.perf_counter()
    model_file, io_json = Path(model_file), Path(io_json)
    with ExitStack() as stack:
        if transport is None:
            from edgecompress.targets.local import LocalTransport
            transport = stack.enter_context(LocalTransport())
        sidecars = onnx_sidecars(model_file) if extra_files is None else [Path(p) for p in extra_files]
        run_dir = f"run{next(_run_ids)}"
        pushes = [(agent_path(), AGENT_NAME), (model_file, model_file.name), (io_json, "io.json")]
        pushes += [(p, p.name) for p in sidecars]
        args = ["--model", model_file.name, "--io", "io.json", "--runtime", runtime, "--threads", str(threads),
                "--warmup-runs", str(warmup_runs), "--runs", str(runs), "--batch", str(batch),
                "--seq-len", str(seq_len), "--min-time-s", str(min_time_s)]
        for p in sidecars:
            args += ["--extra-file", p.name]
        if expected_json is not None:
            pushes.append((Path(expected_json), "expected.json"))
            args += ["--expected", "expected.json"]
        if inputs_json is not None:
            pushes.append((Path(inputs_json), "inputs.json"))
            args += ["--inputs", "inputs.json"]
        if cpu_list:
            args += ["--cpu-list", cpu_list]

        for local, rel in pushes:
            if not local.is_file():
                return _failure(f"{local} does not exist", None, transport, "push", t0)
            res = transport.push(local, f"{run_dir}/{rel}")
            if not res.ok:
                stage = "push" if transport.has_workdir() else "connect"
                return _failure(f"push {local.name} to {transport.describe()} failed: {res.stderr_tail(3)}",
                                res, transport, stage, t0)
        push_s = time.perf_counter() - t0
        res = transport.exec(["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", run_dir,
                              transport.python, AGENT_NAME, *args], timeout_s)
        data = parse_agent_output(res.stdout)
        if res.timed_out:
            return _failure(f"agent timed out after {timeout_s:g} s on {transport.describe()}", res, transport,
                            "exec", t0)
        if data is None:
            return _failure(f"agent printed no JSON (exit {res.returncode}): {res.stderr_tail(3) or res.stdout[-300:]}",
                            res, transport, "exec", t0)
        if not data.get("ok") or res.returncode != 0:
            fail = _failure(str(data.get("error") or f"agent exit {res.returncode}"), res, transport, "agent", t0)
            return fail
        data.update(transport=transport.describe(), push_s=round(push_s, 3),
                    wall_s=round(time.perf_counter() - t0, 3))
        return data


@dataclass(frozen=True)
class BenchItem:
    """One file to bench on every target: `key` names it in results (e.g. "onnx-int8"); meta is copied in."""
    key: str
    model_file: Path
    io_json: Path
    runtime: str
    threads: Optional[int] = None
    expected_json: Optional[Path] = None
    extra_files: Optional[tuple[Path, ...]] = None
    meta: dict = field(default_factory=dict)


def bench_fleet(items: Sequence[BenchItem], targets: Mapping[str, object], max_workers: Optional[int] = None,
                **settings) -> dict[str, list[dict]]:
    """Bench every item on every target; targets run concurrently, items on one target one after another.

    targets maps a device name to a Reach config (a transport is made per worker thread) or a zero-argument
    callable returning a Transport. One device at a time per board on purpose: two agents on one board would
    measure each other. settings go to bench_file (threads, runs, warmup_runs, batch, seq_len, timeout_s, ...).
    """
    def run_target(name: str, target) -> list[dict]:
        transport = target() if callable(target) else make_transport(target)
        out: list[dict] = []
        with transport:
            unreachable: Optional[dict] = None
            for item in items:
                if unreachable is not None:  # do not wait a connect timeout per item for a board that is down
                    r = dict(unreachable)
                else:
                    kw = dict(settings)
                    if item.threads is not None:
                        kw["threads"] = item.threads
                    r = bench_file(item.model_file, item.io_json, item.runtime, transport=transport,
                                   expected_json=item.expected_json, extra_files=item.extra_files, **kw)
                    if not r.get("ok") and r.get("stage") == "connect":
                        unreachable = r
                out.append({"device": name, "artifact": item.key, **item.meta, **r})
        return out

    if not targets:
        return {}
    with ThreadPoolExecutor(max_workers=max_workers or len(targets)) as pool:
        futures = {name: pool.submit(run_target, name, t) for name, t in targets.items()}
        return {name: f.result() for name, f in futures.items()}
