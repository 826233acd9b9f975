"""SSH transport: the system OpenSSH client (`ssh`, `scp`), batch mode, host key checking ON.

Why the system client and not paramiko: it honours the user's ~/.ssh/config, agent and ProxyJump, and adds no
dependency. BatchMode=yes makes a missing key fail fast instead of prompting; StrictHostKeyChecking=yes refuses
unknown hosts (a benchmark that silently trusts a new host key would also ship models to it), so the host must
be in known_hosts (or in the `known_hosts` file the target config names).

The remote command is necessarily one string (ssh joins its arguments for the remote shell), so each argv
element is quoted with shlex.quote; nothing from a user field ever reaches a shell unquoted.

Files travel over the same ssh channel (`cat > 'path'`, `cat 'path'`), not scp: the legacy scp protocol hands the
remote path to the remote shell unquoted while the SFTP one (OpenSSH >= 9.0 default) takes it literally, so no
quoting is right for both; over ssh the path is quoted once, by us, and the board needs no sftp-server.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Optional

from edgecompress.registry import TRANSPORTS
from edgecompress.transports.base import ExecResult, run_local
from edgecompress.transports.remote import RemoteShellTransport


@TRANSPORTS.register("ssh")
class SshTransport(RemoteShellTransport):
    kind = "ssh"

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

    @property
    def _control_timeout_s(self) -> float:
        return self.reach.connect_timeout_s + 30

    def _shell(self, cmd: str, timeout_s: float) -> ExecResult:
        # When ssh is killed at the timeout the remote process loses its channel; its next write fails and it ends.
        # "--" ends ssh's options: the destination can never be read as one (the schema refuses a leading '-' too).
        return run_local(self._argv(cmd), timeout_s)

    def _argv(self, cmd: str) -> list[str]:
        return ["ssh", *self._options(), "-p", str(self.reach.port), "--", self._dest, cmd]

    def _copy_to(self, local_path: Path, remote_path: str, timeout_s: float) -> ExecResult:
        # The mode travels too, as scp and adb push keep it: bundles carry executables.
        mode = os.stat(local_path).st_mode & 0o777
        q = shlex.quote(remote_path)
        return self._stream(f"cat > {q} && chmod {mode:o} {q}", timeout_s, source=Path(local_path))

    def _copy_from(self, remote_path: str, local_path: Path, timeout_s: float) -> ExecResult:
        res = self._stream(f"cat {shlex.quote(remote_path)}", timeout_s, sink=Path(local_path))
        if not res.ok:
            Path(local_path).unlink(missing_ok=True)  # never leave a truncated copy that looks pulled
        return res

    def _stream(self, cmd: str, timeout_s: float, source: Optional[Path] = None,
                sink: Optional[Path] = None) -> ExecResult:
        """One remote command with a local file as its stdin or its stdout (bytes), failures as data."""
        argv = self._argv(cmd)
        t0 = time.perf_counter()
        try:
            with open(source or os.devnull, "rb") as fin, open(sink or os.devnull, "wb") as fout:
                p = subprocess.run(argv, stdin=fin, stdout=fout, stderr=subprocess.PIPE, timeout=timeout_s)
            return ExecResult(p.returncode, "", p.stderr.decode(errors="replace"), time.perf_counter() - t0)
        except subprocess.TimeoutExpired:
            return ExecResult(124, "", f"timed out after {timeout_s:g} s", time.perf_counter() - t0, True)
        except OSError as e:
            return ExecResult(127, "", f"cannot run ssh or open a file: {e}", time.perf_counter() - t0)

    def describe(self) -> str:
        return f"ssh://{self._dest}:{self.reach.port}"
