"""SSH transport: the system OpenSSH client (`ssh`, `scp`), batch mode, host key checking ON.

Why the system client and not paramiko: it honours the user's ~/.ssh/config, agent and ProxyJump, and adds no
dependency. BatchMode=yes makes a missing key fail fast instead of prompting; StrictHostKeyChecking=yes refuses
unknown hosts (a benchmark that silently trusts a new host key would also ship models to it), so the host must
be in known_hosts (or in the `known_hosts` file the target config names).

The remote command is necessarily one string (ssh joins its arguments for the remote shell), so each argv
element is quoted with shlex.quote; nothing from a user field ever reaches a shell unquoted.
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Optional

from edgecompress.registry import TRANSPORTS
from edgecompress.targets.base import ExecResult, SshReach, Transport, run_local


@TRANSPORTS.register("ssh")
class SshTransport(Transport):
    kind = "ssh"

    def __init__(self, reach: SshReach):
        self.reach = reach
        self._workdir: Optional[str] = None
        self._made_dirs: set[str] = set()

    # ---------------------------------------------------------------- argv building

    def _options(self) -> list[str]:
        r = self.reach
        opts = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"ConnectTimeout={r.connect_timeout_s}",
                # Keepalives: a board that drops off the network mid-run ends the call instead of hanging to timeout.
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"]
        if r.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={Path(r.known_hosts).expanduser()}"]
        if r.key:
            opts += ["-i", str(Path(r.key).expanduser()), "-o", "IdentitiesOnly=yes"]
        return opts

    @property
    def _dest(self) -> str:
        return f"{self.reach.user}@{self.reach.host}" if self.reach.user else self.reach.host

    def _scp_dest(self, remote_path: str) -> str:
        host = f"[{self.reach.host}]" if ":" in self.reach.host else self.reach.host  # IPv6 literal
        user = f"{self.reach.user}@" if self.reach.user else ""
        return f"{user}{host}:{remote_path}"

    def _ssh(self, remote_cmd: str, timeout_s: float) -> ExecResult:
        argv = ["ssh", *self._options(), "-p", str(self.reach.port), self._dest, "--", remote_cmd]
        return run_local(argv, timeout_s)

    def _ensure_workdir(self) -> Optional[ExecResult]:
        """Create a unique per-run directory (mktemp -d) so concurrent runs on one board never share files."""
        if self._workdir is not None:
            return None
        template = f"{self.reach.workdir.rstrip('/') or ''}/edgecompress-XXXXXXXX"
        res = self._ssh(f"mkdir -p {shlex.quote(self.reach.workdir)} && mktemp -d {shlex.quote(template)}",
                        timeout_s=self.reach.connect_timeout_s + 30)
        path = res.stdout.strip().splitlines()[-1] if res.ok and res.stdout.strip() else ""
        if not path:
            return ExecResult(res.returncode or 1, res.stdout,
                              f"cannot create a workdir on {self.describe()}: {res.stderr.strip()}",
                              res.duration_s, res.timed_out)
        self._workdir = path
        return None

    # ---------------------------------------------------------------- interface

    @property
    def workdir(self) -> Optional[str]:
        """The device directory, or None when the device could not be reached to create it."""
        self._ensure_workdir()
        return self._workdir

    def has_workdir(self) -> bool:
        return self._workdir is not None

    @property
    def python(self) -> str:
        return self.reach.python

    def describe(self) -> str:
        return f"ssh://{self._dest}:{self.reach.port}"

    def push(self, local_path: Path, remote_rel: str) -> ExecResult:
        t0 = time.perf_counter()
        failed = self._ensure_workdir()
        if failed:
            return failed
        remote = f"{self._workdir}/{remote_rel}"
        parent = remote.rsplit("/", 1)[0]
        if parent != self._workdir and parent not in self._made_dirs:
            res = self._ssh(f"mkdir -p {shlex.quote(parent)}", timeout_s=self.reach.connect_timeout_s + 30)
            if not res.ok:
                return res
            self._made_dirs.add(parent)
        # Generous timeout: a 60 MB model over a Pi's Wi-Fi takes tens of seconds.
        res = run_local(["scp", "-q", *self._options(), "-P", str(self.reach.port), str(local_path),
                         self._scp_dest(remote)], timeout_s=600)
        return ExecResult(res.returncode, res.stdout, res.stderr, time.perf_counter() - t0, res.timed_out)

    def exec(self, argv: list[str], timeout_s: float) -> ExecResult:
        failed = self._ensure_workdir()
        if failed:
            return failed
        cmd = f"cd {shlex.quote(self._workdir)} && exec {' '.join(shlex.quote(a) for a in argv)}"
        # When ssh is killed at the timeout the remote process loses its channel; its next write fails and it ends.
        return self._ssh(cmd, timeout_s)

    def pull(self, remote_rel: str, local_path: Path) -> ExecResult:
        failed = self._ensure_workdir()
        if failed:
            return failed
        return run_local(["scp", "-q", *self._options(), "-P", str(self.reach.port),
                          self._scp_dest(f"{self._workdir}/{remote_rel}"), str(local_path)], timeout_s=600)

    def cleanup(self) -> None:
        if self._workdir is not None:
            self._ssh(f"rm -rf -- {shlex.quote(self._workdir)}", timeout_s=self.reach.connect_timeout_s + 30)
            self._workdir = None
            self._made_dirs.clear()
