"""adb transport: `adb -s SERIAL push/shell/pull` against a per-run directory under /data/local/tmp.

`adb shell` joins its arguments into one string for the device's sh, so every argv element is shlex-quoted
(toybox sh and mksh both accept POSIX single quotes). adb >= 1.0.36 with Android >= 7 returns the remote exit
status (shell protocol v2); on older pairs it is always 0, which is why the harness also requires the agent's JSON.
"""
from __future__ import annotations

from pathlib import Path

from edgecompress.registry import TRANSPORTS
from edgecompress.transports.base import ExecResult, run_local
from edgecompress.transports.remote import RemoteShellTransport


@TRANSPORTS.register("adb")
class AdbTransport(RemoteShellTransport):
    kind = "adb"
    exec_prefix = ""

    def _adb(self, *args: str, timeout_s: float) -> ExecResult:
        serial = ["-s", self.reach.serial] if self.reach.serial else []
        return run_local([self.reach.adb, *serial, *args], timeout_s)

    def _shell(self, cmd: str, timeout_s: float) -> ExecResult:
        return self._adb("shell", cmd, timeout_s=timeout_s)

    def _copy_to(self, local_path: Path, remote_path: str, timeout_s: float) -> ExecResult:
        return self._adb("push", str(local_path), remote_path, timeout_s=timeout_s)

    def _copy_from(self, remote_path: str, local_path: Path, timeout_s: float) -> ExecResult:
        return self._adb("pull", remote_path, str(local_path), timeout_s=timeout_s)

    def describe(self) -> str:
        return f"adb://{self.reach.serial or ''}"
