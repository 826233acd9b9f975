"""run_agent: push a runner and its files to a device, run it there, bring its one JSON line back as a dict.

Used by `bench` (latency/memory), `verify` (labels on the target) and the pipeline's benchmark step alike. Every
failure (unreachable device, missing runtime, timeout, wrong outputs) comes back as {"ok": False, "error": ...}.
"""
from __future__ import annotations

import itertools
import os
import time

from edgecompress.device.protocol import AGENT_FILES, AGENT_NAME, AgentRequest, agent_path, failure, parse_output

_run_ids = itertools.count()


def run_agent(transport, request: AgentRequest, timeout_s: float) -> dict:
    """Run `request` on `transport` in a fresh sub-directory of its workdir; the runner's dict (+ transport,
    push_s, wall_s) or a failure dict. The transport is left open: several files on one device share it."""
    t0 = time.perf_counter()
    run_dir = f"run{os.getpid()}-{next(_run_ids)}"
    for local, rel in [*((agent_path(n), n) for n in AGENT_FILES), *request.files()]:
        if not local.is_file():
            return failure(f"{local} does not exist", "push", transport.describe(), t0)
        res = transport.push(local, f"{run_dir}/{rel}")
        if not res.ok:
            stage = "push" if transport.has_workdir() else "connect"
            return failure(f"push {local.name} to {transport.describe()} failed: {res.stderr_tail(3)}", stage,
                           transport.describe(), t0, res)
    push_s = time.perf_counter() - t0
    # `sh -c 'cd "$1" ...' sh DIR ...`: the directory travels as a positional argument, never inside the script.
    res = transport.exec(["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", run_dir,
                          transport.python, AGENT_NAME, *request.argv()], timeout_s)
    data = parse_output(res.stdout)
    if res.timed_out:
        return failure(f"agent timed out after {timeout_s:g} s on {transport.describe()}", "exec",
                       transport.describe(), t0, res)
    if data is None:
        return failure(f"agent printed no JSON (exit {res.returncode}): {res.stderr_tail(3) or res.stdout[-300:]}",
                       "exec", transport.describe(), t0, res)
    if not data.get("ok") or res.returncode != 0:
        return failure(str(data.get("error") or f"agent exit {res.returncode}"), "agent", transport.describe(), t0,
                       res)
    data.update(transport=transport.describe(), push_s=round(push_s, 3), wall_s=round(time.perf_counter() - t0, 3))
    return data
