"""Local transport: the "device" is this machine; a temp directory stands in for the device workdir.

Files are copied, not linked, so load_ms includes reading a file the agent's process has not mapped before,
as it would on a device.
"""
from __future__ import annotations

import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from edgecompress.registry import TRANSPORTS
from edgecompress.transports.base import ExecResult, Transport, run_local
from edgecompress.transports.reach import LocalReach


def copy_into(workdir: str, local_path: Path, remote_rel: str) -> ExecResult:
    """Push for transports whose device directory is on this file system (local, qemu-arm64)."""
    t0 = time.perf_counter()
    try:
        dest = Path(workdir) / remote_rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(local_path, dest)  # with its mode, as scp and adb push keep it: bundles carry executables
        return ExecResult(0, "", "", time.perf_counter() - t0)
    except OSError as e:
        return ExecResult(1, "", f"push {local_path} -> {remote_rel}: {e}", time.perf_counter() - t0)


def copy_out_of(workdir: str, remote_rel: str, local_path: Path) -> ExecResult:
    t0 = time.perf_counter()
    try:
        shutil.copyfile(Path(workdir) / remote_rel, local_path)
        return ExecResult(0, "", "", time.perf_counter() - t0)
    except OSError as e:
        return ExecResult(1, "", f"pull {remote_rel} -> {local_path}: {e}", time.perf_counter() - t0)


@TRANSPORTS.register("local")
class LocalTransport(Transport):
    kind = "local"

    def __init__(self, reach: Optional[LocalReach] = None):
        self.reach = reach or LocalReach()
        self._workdir: Optional[str] = None

    def _ensure_workdir(self) -> None:
        if self._workdir is None:
            self._workdir = tempfile.mkdtemp(prefix="edgecompress-bench-")

    @property
    def python(self) -> str:
        return self.reach.python or sys.executable

    def push(self, local_path: Path, remote_rel: str) -> ExecResult:
        return copy_into(self.workdir, local_path, remote_rel)

    def exec(self, argv: list[str], timeout_s: float) -> ExecResult:
        return run_local(list(argv), timeout_s, cwd=self.workdir)

    def pull(self, remote_rel: str, local_path: Path) -> ExecResult:
        return copy_out_of(self.workdir, remote_rel, local_path)

    def machine(self) -> str:
        return platform.machine()

    def cleanup(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
