"""adb transport: `adb -s SERIAL push/shell/pull` against a per-run directory under /data/local/tmp.

`adb shell` joins its arguments into one string for the device's sh, so every argv element is shlex-quoted
(toybox sh and mksh both accept POSIX single quotes). adb >= 1.0.36 with Android >= 7 returns the remote exit
status (shell protocol v2); on older pairs it is always 0, which is why the harness also requires the agent's JSON.
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Optional

from edgecompress.registry import TRANSPORTS
from edgecompress.targets.base import AdbReach, ExecResult, Transport, run_local


@TRANSPORTS.register("adb")
class AdbTransport(Transport):
    kind = "adb"

    def __init__(self, reach: AdbReach):
        self.reach = reach
        self._workdir: Optional[str] = None
        self._made_dirs: set[str] = set()

    def _adb(self, *args: str, timeout_s: float) -> ExecResult:
        serial = ["-s", self.reach.serial] if self.reach.serial else []
        return run_local([self.reach.adb, *serial, *args], timeout_s)

    def _shell(self, cmd: str, timeout_s: float) -> ExecResult:
        return self._adb("shell", cmd, timeout_s=timeout_s)

    def _ensure_workdir(self) -> Optional[ExecResult]:
        if self._workdir is not None:
            return None
        template = f"{self.reach.workdir.rstrip('/')}/edgecompress-XXXXXXXX"
        res = self._shell(f"mkdir -p {shlex.quote(self.reach.workdir)} && mktemp -d {shlex.quote(template)}", 60)
        path = res.stdout.strip().splitlines()[-1].strip() if res.ok and res.stdout.strip() else ""
        if not path:
            return ExecResult(res.returncode or 1, res.stdout,
                              f"cannot create a workdir on {self.describe()}: {res.stderr.strip()}",
                              res.duration_s, res.timed_out)
        self._workdir = path
        return None

    @property
    def workdir(self) -> Optional[str]:
        self._ensure_workdir()
        return self._workdir

    def has_workdir(self) -> bool:
        return self._workdir is not None

    @property
    def python(self) -> str:
        return self.reach.python

    def describe(self) -> str:
        return f"adb://{self.reach.serial or ''}"

    def push(self, local_path: Path, remote_rel: str) -> ExecResult:
        t0 = time.perf_counter()
        failed = self._ensure_workdir()
        if failed:
            return failed
        remote = f"{self._workdir}/{remote_rel}"
        parent = remote.rsplit("/", 1)[0]
        if parent != self._workdir and parent not in self._made_dirs:
            res = self._shell(f"mkdir -p {shlex.quote(parent)}", 60)
            if not res.ok:
                return res
            self._made_dirs.add(parent)
        res = self._adb("push", str(local_path), remote, timeout_s=600)
        return ExecResult(res.returncode, res.stdout, res.stderr, time.perf_counter() - t0, res.timed_out)

    def exec(self, argv: list[str], timeout_s: float) -> ExecResult:
        failed = self._ensure_workdir()
        if failed:
            return failed
        return self._shell(f"cd {shlex.quote(self._workdir)} && {' '.join(shlex.quote(a) for a in argv)}", timeout_s)

    def pull(self, remote_rel: str, local_path: Path) -> ExecResult:
        failed = self._ensure_workdir()
        if failed:
            return failed
        return self._adb("pull", f"{self._workdir}/{remote_rel}", str(local_path), timeout_s=600)

    def cleanup(self) -> None:
        if self._workdir is not None:
            self._shell(f"rm -rf {shlex.quote(self._workdir)}", 60)
            self._workdir = None
            self._made_dirs.clear()
