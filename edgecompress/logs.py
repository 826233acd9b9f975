"""Third-party noise goes to a log file in the run folder; edgecompress's own progress keeps the terminal.

A default run otherwise prints what a user cannot act on: torch.onnx's torchvision warnings, FutureWarnings,
ExecuTorch's cpuinfo/threadpool lines (written by C++ straight to file descriptor 2), ONNX Runtime's pre-processing
advice, transformers' notices. `--debug` leaves everything on the terminal.

How: file descriptor 2 is pointed at the log, so everything written to it lands there — C/C++ writes, Python
warnings, and every logging handler, including the ones libraries create lazily on `sys.stderr` — while
edgecompress's own messages go to a duplicate of the terminal's descriptor (progress.stream()).
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from edgecompress import progress

_log_path: Path | None = None  # where fd 2 goes while to_log is open
_debug = False


def set_debug(debug: bool) -> None:
    """--debug: third-party output stays on the terminal everywhere."""
    global _debug
    _debug = debug


@contextmanager
def _fd2_to(path: Path) -> Iterator[int]:
    """File descriptor 2 appends to `path` inside the block; yields a duplicate of what fd 2 was before."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fd = os.dup(2)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    try:
        yield saved_fd
    finally:
        sys.stderr.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)


@contextmanager
def to_log(path: Path, enabled: bool = True) -> Iterator[None]:
    global _log_path
    if not enabled:
        yield
        return
    with _fd2_to(path) as saved_fd:
        terminal = os.fdopen(os.dup(saved_fd), "w", buffering=1, encoding="utf-8", errors="replace")
        progress.set_stream(terminal)
        _log_path = Path(path)
        try:
            yield
        finally:
            progress.set_stream(None)
            _log_path = None
            terminal.close()


@contextmanager
def native_to_log() -> Iterator[None]:
    """Around a native runtime's load: what its C/C++ code writes straight to fd 2 (ExecuTorch's cpuinfo and
    threadpool lines) goes to a log, outside a run too (`verify`, `bench`, `predict` load in this process): the run's
    log when one is open, else <home>/logs/native.log. The block holds no edgecompress output."""
    if _debug or _log_path is not None:
        yield
        return
    from edgecompress.paths import logs_dir
    with _fd2_to(logs_dir() / "native.log"):
        yield
