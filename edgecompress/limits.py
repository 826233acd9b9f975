"""Bounds on every number and list that sizes work on a device: CPU lists, runs, warmup, batch, sequence length,
threads, timeouts. Checked on the host before anything is pushed (a one-line UserInputError naming the flag and
its bound), and again in run_agent, so no caller can hand a device a job that takes hours or a set of a hundred
million CPUs. The Python agent repeats the CPU bound itself (it runs without this package on the device).

The bounds are far above any real use and far below what hurts: 100,000 timed runs of a 1 ms model are under two
minutes; a CPU id must fit the `cpu_set_t` (CPU_SETSIZE, 1024) that sched_setaffinity and the native runner use.
"""
from __future__ import annotations

import math
import re
from typing import Mapping, Optional

from edgecompress.config import shown
from edgecompress.errors import UserInputError

CPU_SETSIZE = 1024
MAX_TARGETS = 64  # devices benched at once by one `bench`: each gets a thread and a connection
MAX_CPU_LIST_CHARS = 256
# name: (lowest, highest, lowest may be equal). The flag is --name with '-' for '_'.
BOUNDS: dict[str, tuple[float, float, bool]] = {
    "threads": (1, 256, True),
    "warmup_runs": (0, 10_000, True),
    "runs": (1, 100_000, True),
    "batch": (1, 256, True),
    "seq_len": (1, 8192, True),
    "min_time_s": (0, 3600, True),
    "timeout_s": (0, 86_400, False),
}
_CPU_LIST = re.compile(r"[0-9]+(?:-[0-9]+)?(?:,[0-9]+(?:-[0-9]+)?)*")


def bound_problem(name: str, value: object) -> Optional[str]:
    """Why `value` is out of bounds for setting `name` (one phrase naming the flag and the range), or None."""
    lo, hi, inclusive = BOUNDS[name]
    flag = "--" + name.replace("_", "-")
    span = f"{'>=' if inclusive else '>'} {lo:g} and <= {hi:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{flag} must be a number {span} (got {shown(value)})"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{flag} must be a finite number {span} (got {value})"
    if not (lo <= value <= hi) or (not inclusive and value == lo):
        return f"{flag} must be {span} (got {shown(value)})"
    return None


def field_problem(name: str, value: object) -> Optional[str]:
    """bound_problem without the flag or the value, for a config field (pydantic names the field and the value)."""
    problem = bound_problem(name, value)
    return problem.split(" ", 1)[1].rsplit(" (got ", 1)[0] if problem else None


def check_bounds(values: Mapping[str, object]) -> None:
    """Raise UserInputError for the first setting out of its bounds; None values (unset) are skipped."""
    for name, value in values.items():
        if value is None or name not in BOUNDS:
            continue
        problem = bound_problem(name, value)
        if problem:
            raise UserInputError(problem)


def cpu_list_problem(text: object) -> Optional[str]:
    """Why `text` is not a CPU list the device can take (taskset syntax `4-7,9`, ids below CPU_SETSIZE), or None."""
    if not isinstance(text, str):
        return f"--cpu-list must be text like 4-7,9 (got {type(text).__name__})"
    shown = repr(text[:40]) + ("..." if len(text) > 40 else "")
    if len(text) > MAX_CPU_LIST_CHARS:
        return f"--cpu-list {shown} is longer than {MAX_CPU_LIST_CHARS} characters; name ranges like 0-7"
    if not _CPU_LIST.fullmatch(text):
        bad = next((c for c in text if c not in "0123456789,-"), None)
        what = f": character {bad!r} is not allowed" if bad is not None else " is not a list like 4-7,9"
        return f"--cpu-list {shown}{what}; use CPU ids and ranges, e.g. 4-7,9"
    for part in text.split(","):
        a, _, b = part.partition("-")
        lo, hi = int(a), int(b or a)
        if hi >= CPU_SETSIZE:
            return f"--cpu-list {shown}: CPU {hi} is above the highest CPU id {CPU_SETSIZE - 1}"
        if lo > hi:
            return f"--cpu-list {shown}: range {part} runs backwards; write it as {hi}-{lo}"
    return None


def parse_cpu_list(text: str) -> list[int]:
    """'4-7,9' -> [4, 5, 6, 7, 9]; a one-line UserInputError otherwise."""
    problem = cpu_list_problem(text)
    if problem:
        raise UserInputError(problem)
    cpus: set[int] = set()
    for part in text.split(","):
        a, _, b = part.partition("-")
        cpus.update(range(int(a), int(b or a) + 1))
    return sorted(cpus)


def check_cpu_list(text: Optional[str]) -> Optional[str]:
    """The CPU list as given when it is valid (None stays None); UserInputError otherwise."""
    if text is not None:
        parse_cpu_list(text)
    return text


def request_problem(request, timeout_s: float) -> Optional[str]:
    """The first out-of-bounds value of an AgentRequest (and its timeout), or None."""
    values = {**request.bench.model_dump(), "min_time_s": request.min_time_s, "timeout_s": timeout_s}
    for name, value in values.items():
        if value is not None:
            problem = bound_problem(name, value)
            if problem:
                return problem
    cpu_list = getattr(request, "cpu_list", None)
    return cpu_list_problem(cpu_list) if cpu_list is not None else None
