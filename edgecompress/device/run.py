"""run_agent: push a runner and its files to a device, run it there, bring its one JSON line back as a dict.

Used by `bench` (latency/memory), `verify` (labels on the target) and the pipeline's benchmark step alike. Every
failure (unreachable device, missing runtime, timeout, wrong outputs) comes back as {"ok": False, "error": ...}.

Two runners speak the same protocol: the Python agent (agent.py + agent_runtimes.py, pushed per run), and the native
runner of a format that has one (a self-contained bundle per CPU architecture, pushed once per device session).
"""
from __future__ import annotations

import itertools
import os
import threading
import time
import weakref

from edgecompress.limits import request_problem
from edgecompress.device.protocol import AGENT_FILES, AGENT_NAME, AgentRequest, agent_path, failure, parse_output
from edgecompress.errors import EdgeCompressError

_run_ids = itertools.count()
# transport -> {bundle name: its folder in the device workdir}: a 16-19 MiB bundle is pushed once per session.
_staged: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_staging = threading.Lock()


def _push_all(transport, files, run_dir: str, t0: float):
    for local, rel in files:
        if not local.is_file():
            return failure(f"{local} does not exist", "push", transport.describe(), t0)
        res = transport.push(local, f"{run_dir}/{rel}" if run_dir else rel)
        if not res.ok:
            stage = "push" if transport.has_workdir() else "connect"
            return failure(f"push {local.name} to {transport.describe()} failed: {res.stderr_tail(3)}", stage,
                           transport.describe(), t0, res)
    return None


def _native_command(transport, t0: float):
    """(argv prefix that starts the native runner, None) once its bundle is on the device, or (None, failure)."""
    from edgecompress.device import native
    machine = transport.machine()
    try:
        bundle = native.build_runner(machine)
    except EdgeCompressError as e:
        return None, failure(f"native runner for {machine}: {e}", "prepare", transport.describe(), t0)
    with _staging:
        staged = _staged.setdefault(transport, {})
        if bundle.name not in staged:
            dest = f"native-{bundle.name[-12:]}"
            failed = _push_all(transport, native.bundle_files(bundle, dest), "", t0)
            if failed:
                return None, failed
            staged[bundle.name] = dest
    return native.launch_argv(f"../{staged[bundle.name]}", machine, transport.emulator_argv()), None


def run_agent(transport, request: AgentRequest, timeout_s: float, runner: str = "python") -> dict:
    """Run `request` on `transport` with `runner` ("python" or "native") in a fresh sub-directory of its workdir;
    the runner's dict (+ transport, push_s, wall_s) or a failure dict. The transport is left open: several files on
    one device share it (and its staged native bundle)."""
    t0 = time.perf_counter()
    out_of_bounds = request_problem(request, timeout_s)
    if out_of_bounds:
        return failure(out_of_bounds, "prepare", transport.describe(), t0)
    run_dir = f"run{os.getpid()}-{next(_run_ids)}"
    if runner == "native":
        command, failed = _native_command(transport, t0)
        files = request.files()
    else:
        command, failed = [transport.python, AGENT_NAME], None
        files = [*((agent_path(n), n) for n in AGENT_FILES), *request.files()]
    failed = failed or _push_all(transport, files, run_dir, t0)
    if failed:
        return failed
    push_s = time.perf_counter() - t0
    # `sh -c 'cd "$1" ...' sh DIR ...`: the directory travels as a positional argument, never inside the script.
    res = transport.exec(["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", run_dir, *command, *request.argv()],
                         timeout_s)
    data = parse_output(res.stdout)
    if res.timed_out:
        return failure(f"{runner} runner timed out after {timeout_s:g} s on {transport.describe()}", "exec",
                       transport.describe(), t0, res)
    if data is None:
        return failure(f"{runner} runner printed no JSON (exit {res.returncode}): "
                       f"{res.stderr_tail(3) or res.stdout[-300:]}", "exec", transport.describe(), t0, res)
    if not data.get("ok") or res.returncode != 0:
        return failure(str(data.get("error") or f"{runner} runner exit {res.returncode}"), "agent",
                       transport.describe(), t0, res)
    data.update(transport=transport.describe(), push_s=round(push_s, 3), wall_s=round(time.perf_counter() - t0, 3))
    data.setdefault("runner", runner)
    return data
