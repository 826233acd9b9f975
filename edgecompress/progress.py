"""Progress bars (rich) on every long loop; silent under --quiet / --json or when stderr is not a terminal
and EDGECOMPRESS_PROGRESS is unset (CI logs stay readable)."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")
_quiet = False
_terminal = None  # where edgecompress's own messages go while third-party output is diverted (logs.to_log)


def stream():
    """The stream for edgecompress's own progress and messages: the terminal, even while fd 2 goes to a log."""
    return _terminal or sys.stderr


def set_stream(s) -> None:
    global _terminal
    _terminal = s


def set_quiet(q: bool) -> None:
    global _quiet
    _quiet = q


def enabled() -> bool:
    if _quiet:
        return False
    forced = os.environ.get("EDGECOMPRESS_PROGRESS")
    if forced is not None:
        return forced not in ("0", "", "false")
    return stream().isatty()


def track(it: Iterable[T], total: Optional[int] = None, description: str = "") -> Iterator[T]:
    if not enabled():
        yield from it
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.console import Console
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*cols, console=Console(file=stream()), transient=False) as p:
        task = p.add_task(description, total=total if total is not None else (len(it) if hasattr(it, "__len__") else None), info="")
        for x in it:
            yield x
            p.advance(task)


@contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner for steps without a natural count (ExecuTorch lowering, ONNX export)."""
    if not enabled():
        yield
        return
    from rich.console import Console
    with Console(file=stream()).status(message):
        yield


def log(message: str) -> None:
    if not _quiet:
        print(message, file=stream(), flush=True)
