"""Benchmark model files on devices: one file on one device (bench_file), or every file on a fleet (bench_fleet).

Both go through edgecompress.device.run_agent, the one path that pushes a runner and its files, runs it on the
device and reads its JSON line back; a failure anywhere comes back as {"ok": False, "error": ...}.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

from edgecompress.device.protocol import AgentRequest
from edgecompress.device.run import run_agent
from edgecompress.transports.base import Transport, make_transport


def onnx_sidecars(model_file: Path) -> list[Path]:
    """External-data files an .onnx needs beside it (torch.onnx's dynamo path writes `<model>.onnx.data`).

    Read from the model's initializers when onnx is installed (the location is whatever the exporter chose),
    else the `<model>.data` convention. Only files inside the model's folder count: a location that leaves it is
    not pushed to a device.
    """
    model_file = Path(model_file)
    if model_file.suffix != ".onnx":
        return []
    folder = model_file.parent.resolve()
    try:
        import onnx
        m = onnx.load(str(model_file), load_external_data=False)
        locations = {e.value for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                     for e in t.external_data if e.key == "location"}
    except Exception:  # noqa: BLE001 - onnx missing or an unreadable model: fall back to the naming convention
        locations = {model_file.name + ".data"}
    found = [(model_file.parent / loc) for loc in sorted(locations)]
    return [p for p in found if p.is_file() and p.resolve().parent == folder]


def bench_file(model_file: Path, io_json: Path, runtime: str, *, threads: int = 1, warmup_runs: int = 5,
               runs: int = 50, batch: int = 1, seq_len: int = 128, transport: Optional[Transport] = None,
               timeout_s: float = 600, expected_json: Optional[Path] = None, min_time_s: float = 0.0,
               extra_files: Optional[Sequence[Path]] = None, inputs_json: Optional[Path] = None,
               cpu_list: Optional[str] = None, runner: str = "python", tokenizer_json: Optional[Path] = None,
               texts_json: Optional[Path] = None) -> dict:
    """Benchmark one model file on one device; returns the runner's dict (+ transport, wall_s) or a failure dict.

    transport=None runs on this machine in a temp dir (cleaned up); a given transport is left open, so a caller
    benching several files on one device reuses its connection/workdir. extra_files=None finds ONNX sidecars.
    runner: "python" (the agent) or "native" (the format's C++ runner, where FORMATS says it has one).
    tokenizer_json + texts_json: also time text -> label on those texts (the Python agent only).
    """
    model_file = Path(model_file)
    sidecars = onnx_sidecars(model_file) if extra_files is None else [Path(p) for p in extra_files]
    request = AgentRequest(model_file, Path(io_json), runtime, threads=threads, warmup_runs=warmup_runs, runs=runs,
                           batch=batch, seq_len=seq_len, min_time_s=min_time_s, expected_json=expected_json,
                           inputs_json=inputs_json, cpu_list=cpu_list, extra_files=tuple(sidecars),
                           tokenizer_json=tokenizer_json if runner == "python" else None, texts_json=texts_json)
    with ExitStack() as stack:
        if transport is None:
            from edgecompress.transports.local import LocalTransport
            transport = stack.enter_context(LocalTransport())
        return run_agent(transport, request, timeout_s, runner=runner)


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
    runner: str = "python"
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
                                   expected_json=item.expected_json, extra_files=item.extra_files,
                                   runner=item.runner, **kw)
                    if not r.get("ok") and r.get("stage") == "connect":
                        unreachable = r
                out.append({"device": name, "artifact": item.key, **item.meta, **r})
        return out

    if not targets:
        return {}
    with ThreadPoolExecutor(max_workers=max_workers or len(targets)) as pool:
        futures = {name: pool.submit(run_target, name, t) for name, t in targets.items()}
        return {name: f.result() for name, f in futures.items()}
