"""What SSH and adb share: a device reached through a remote shell plus a file-copy tool.

Both create a unique per-run directory with `mktemp -d` (concurrent runs on one board never share files), push
into it creating parent folders once, run argv from inside it (each element shlex-quoted: the remote side gets one
string for its sh), pull from it, and remove it on cleanup. A subclass says only how to run a shell command and
how to copy a file each way.
"""
from __future__ import annotations

import shlex
import time
from abc import abstractmethod
from pathlib import Path
from typing import Optional

from edgecompress.transports.base import ExecResult, Transport

COPY_TIMEOUT_S = 600  # a 60 MB model over a Pi's Wi-Fi takes tens of seconds


class RemoteShellTransport(Transport):
    # "exec " replaces the remote shell with the agent, so a killed channel ends the agent too (OpenSSH);
    # adb's shell keeps it as a child, where it makes no difference.
    exec_prefix = "exec "

    def __init__(self, reach):
        self.reach = reach
        self._workdir: Optional[str] = None
        self._made_dirs: set[str] = set()

    @abstractmethod
    def _shell(self, cmd: str, timeout_s: float) -> ExecResult:
        """Run one (already quoted) shell command on the device."""

    @abstractmethod
    def _copy_to(self, local_path: Path, remote_path: str, timeout_s: float) -> ExecResult: ...

    @abstractmethod
    def _copy_from(self, remote_path: str, local_path: Path, timeout_s: float) -> ExecResult: ...

    @property
    def _control_timeout_s(self) -> float:
        """Timeout of the small bookkeeping commands (mkdir, mktemp, rm)."""
        return 60

    def _ensure_workdir(self) -> Optional[ExecResult]:
        if self._workdir is not None:
            return None
        template = f"{self.reach.workdir.rstrip('/')}/edgecompress-XXXXXXXX"
        res = self._shell(f"mkdir -p {shlex.quote(self.reach.workdir)} && mktemp -d {shlex.quote(template)}",
                          self._control_timeout_s)
        path = res.stdout.strip().splitlines()[-1].strip() if res.ok and res.stdout.strip() else ""
        if not path:
            return ExecResult(res.returncode or 1, res.stdout,
                              f"cannot create a workdir on {self.describe()}: {res.stderr.strip()}",
                              res.duration_s, res.timed_out)
        self._workdir = path
        return None

    @property
    def python(self) -> str:
        return self.reach.python

    def push(self, local_path: Path, remote_rel: str) -> ExecResult:
        t0 = time.perf_counter()
        failed = self._ensure_workdir()
        if failed:
            return failed
        remote = f"{self._workdir}/{remote_rel}"
        parent = remote.rsplit("/", 1)[0]
        if parent != self._workdir and parent not in self._made_dirs:
            res = self._shell(f"mkdir -p {shlex.quote(parent)}", self._control_timeout_s)
            if not res.ok:
                return res
            self._made_dirs.add(parent)
        res = self._copy_to(Path(local_path), remote, COPY_TIMEOUT_S)
        return ExecResult(res.returncode, res.stdout, res.stderr, time.perf_counter() - t0, res.timed_out)

    def exec(self, argv: list[str], timeout_s: float) -> ExecResult:
        failed = self._ensure_workdir()
        if failed:
            return failed
        return self._shell(f"cd {shlex.quote(self._workdir)} && {self.exec_prefix}"
                           f"{' '.join(shlex.quote(a) for a in argv)}", timeout_s)

    def pull(self, remote_rel: str, local_path: Path) -> ExecResult:
        failed = self._ensure_workdir()
        if failed:
            return failed
        return self._copy_from(f"{self._workdir}/{remote_rel}", Path(local_path), COPY_TIMEOUT_S)

    def cleanup(self) -> None:
        if self._workdir is not None:
            self._shell(f"rm -rf -- {shlex.quote(self._workdir)}", self._control_timeout_s)
            self._workdir = None
            self._made_dirs.clear()
