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

from edgecompress.device.protocol import AgentRequest, BenchSettings
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


def bench_file(model_file: Path, io_json: Path, runtime: str, settings: Optional[BenchSettings] = None, *,
               transport: Optional[Transport] = None, runner: str = "python", extra_files: Optional[Sequence[Path]] = None,
               **request) -> dict:
    """Benchmark one model file on one device; returns the runner's dict (+ transport, wall_s) or a failure dict.

    settings: how to measure (BenchSettings; keyword arguments named like its fields override it, e.g. runs=3).
    transport=None runs on this machine in a temp dir (cleaned up); a given transport is left open, so a caller
    benching several files on one device reuses its connection/workdir. extra_files=None finds ONNX sidecars.
    runner: "python" (the agent) or "native" (the format's C++ runner, where FORMATS says it has one).
    request: the other AgentRequest fields (expected_json, inputs_json, cpu_list, min_time_s, tokenizer_json +
    texts_json to also time text -> label; the Python agent only).
    """
    model_file = Path(model_file)
    overrides = {k: request.pop(k) for k in list(request) if k in BenchSettings.model_fields}
    settings = (settings or BenchSettings()).but(**overrides)
    sidecars = onnx_sidecars(model_file) if extra_files is None else [Path(p) for p in extra_files]
    if runner != "python":  # native runners time the model; tokenization is the app's own code there
        request["tokenizer_json"] = None
    agent_request = AgentRequest(model_file, Path(io_json), runtime, settings, extra_files=tuple(sidecars), **request)
    with ExitStack() as stack:
        if transport is None:
            from edgecompress.transports.local import LocalTransport
            transport = stack.enter_context(LocalTransport())
        return run_agent(transport, agent_request, settings.timeout_s, runner=runner)


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


def bench_fleet(items: Sequence[BenchItem], targets: Mapping[str, object], settings: Optional[BenchSettings] = None,
                max_workers: Optional[int] = None, **request) -> dict[str, list[dict]]:
    """Bench every item on every target; targets run concurrently, items on one target one after another.

    targets maps a device name to a Reach config (a transport is made per worker thread) or a zero-argument
    callable returning a Transport. One device at a time per board on purpose: two agents on one board would
    measure each other. settings and request go to bench_file (an item's threads override the settings').
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
                    r = bench_file(item.model_file, item.io_json, item.runtime,
                                   (settings or BenchSettings()).but(threads=item.threads), transport=transport,
                                   expected_json=item.expected_json, extra_files=item.extra_files,
                                   runner=item.runner, **request)
                    if not r.get("ok") and r.get("stage") == "connect":
                        unreachable = r
                out.append({"device": name, "artifact": item.key, **item.meta, **r})
        return out

    if not targets:
        return {}
    with ThreadPoolExecutor(max_workers=max_workers or len(targets)) as pool:
        futures = {name: pool.submit(run_target, name, t) for name, t in targets.items()}
        return {name: f.result() for name, f in futures.items()}
