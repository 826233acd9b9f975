"""SSH transport: the system OpenSSH client (`ssh`, `scp`), batch mode, host key checking ON.

Why the system client and not paramiko: it honours the user's ~/.ssh/config, agent and ProxyJump, and adds no
dependency. BatchMode=yes makes a missing key fail fast instead of prompting; StrictHostKeyChecking=yes refuses
unknown hosts (a benchmark that silently trusts a new host key would also ship models to it), so the host must
be in known_hosts (or in the `known_hosts` file the target config names).

The remote command is necessarily one string (ssh joins its arguments for the remote shell), so each argv
element is quoted with shlex.quote; nothing from a user field ever reaches a shell unquoted.
"""
from __future__ import annotations

from pathlib import Path

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

    def _scp_dest(self, remote_path: str) -> str:
        host = f"[{self.reach.host}]" if ":" in self.reach.host else self.reach.host  # IPv6 literal
        user = f"{self.reach.user}@" if self.reach.user else ""
        return f"{user}{host}:{remote_path}"

    @property
    def _control_timeout_s(self) -> float:
        return self.reach.connect_timeout_s + 30

    def _shell(self, cmd: str, timeout_s: float) -> ExecResult:
        # When ssh is killed at the timeout the remote process loses its channel; its next write fails and it ends.
        # "--" ends ssh's options: the destination can never be read as one (the schema refuses a leading '-' too).
        return run_local(["ssh", *self._options(), "-p", str(self.reach.port), "--", self._dest, cmd], timeout_s)

    def _copy_to(self, local_path: Path, remote_path: str, timeout_s: float) -> ExecResult:
        return run_local(["scp", "-q", *self._options(), "-P", str(self.reach.port), "--", str(local_path),
                          self._scp_dest(remote_path)], timeout_s)

    def _copy_from(self, remote_path: str, local_path: Path, timeout_s: float) -> ExecResult:
        return run_local(["scp", "-q", *self._options(), "-P", str(self.reach.port), "--", self._scp_dest(remote_path),
                          str(local_path)], timeout_s)

    def describe(self) -> str:
        return f"ssh://{self._dest}:{self.reach.port}"
