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


@contextmanager
def to_log(path: Path, enabled: bool = True) -> Iterator[None]:
    if not enabled:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fd = os.dup(2)
    terminal = os.fdopen(os.dup(saved_fd), "w", buffering=1, encoding="utf-8", errors="replace")
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    progress.set_stream(terminal)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        progress.set_stream(None)
        terminal.close()
