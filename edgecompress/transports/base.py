"""What every transport shares: how a device is reached (config as data), ExecResult, the interface, the URL parser.

A transport never raises on a non-zero exit, an unreachable host or a timeout: it returns an ExecResult that
carries the device's returncode and stderr (TVM's RunnerResult idea), so a fleet run reports one broken Pi
as a row in the results instead of losing the other devices' numbers to a traceback.
"""
from __future__ import annotations

import subprocess
import time
import urllib.parse
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, Field, ValidationError, field_validator

from edgecompress.config import Cfg, first_error, shown
from edgecompress.errors import UserInputError


# What a target field may hold. Anything else could mean something to a remote shell (`$`, backquote, `;`, quotes,
# globs), to ssh's own parser and ProxyCommand's %h/%u expansion (whitespace, `%`, `@` in a user name), or look
# like another character than it is (unicode). Each set is what real values of that field need and no more.
NAME_CHARS = "letters, digits and . _ -"
HOST_CHARS = "letters, digits and . _ - (an IPv6 literal: hex digits and :)"
SERIAL_CHARS = "letters, digits and . _ - :"
PATH_CHARS = "letters, digits and . _ - + / ~"
_ALLOWED = {
    "name": frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"),
    "host": frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:"),
    "serial": frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:"),
    "path": frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+/~"),
}
_DESCRIBED = {"name": NAME_CHARS, "host": HOST_CHARS, "serial": SERIAL_CHARS, "path": PATH_CHARS}
MAX_FIELD_CHARS = 1024


def safe_field(value: Optional[str], kind: str = "path") -> Optional[str]:
    """A value that lands on a command line or in a remote shell's string (host, user, serial, path): only the
    characters its kind allows, never a leading '-' (it would be read as an option), never a '..' path step (a
    path inside a rootfs or workdir must stay inside it). The ValueError names the first offending character."""
    if value is None:
        return value
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_FIELD_CHARS:
        raise ValueError(f"is longer than {MAX_FIELD_CHARS} characters")
    if value.startswith("-"):
        raise ValueError("must not start with '-' (it would be read as a command-line option)")
    bad = next((c for c in value if c not in _ALLOWED[kind]), None)
    if bad is not None:
        raise ValueError(f"character {bad!r} is not allowed; use only {_DESCRIBED[kind]}")
    if kind == "path" and ".." in value.split("/"):
        raise ValueError("must not contain a '..' path step; give the path without it")
    return value


def _fields(kind: str, *names: str):
    return field_validator(*names)(classmethod(lambda cls, v: safe_field(v, kind)))


class LocalReach(Cfg):
    kind: Literal["local"] = "local"
    python: Optional[str] = Field(None, description="interpreter for the agent; default: the one running edgecompress")

    _safe = _fields("path", "python")


class SshReach(Cfg):
    kind: Literal["ssh"] = "ssh"
    host: str = Field(..., min_length=1)
    user: Optional[str] = None
    port: int = Field(22, ge=1, le=65535)
    key: Optional[str] = Field(None, description="identity file (ssh -i); default: ssh's own choice / agent")
    known_hosts: Optional[str] = Field(None, description="UserKnownHostsFile; host key checking stays on")
    workdir: str = Field("/tmp", description="parent of the per-run directory made with mktemp -d")
    python: str = "python3"
    connect_timeout_s: int = Field(10, ge=1, le=600)

    _host = _fields("host", "host")
    _user = _fields("name", "user")
    _paths = _fields("path", "key", "known_hosts", "workdir", "python")


class AdbReach(Cfg):
    kind: Literal["adb"] = "adb"
    serial: Optional[str] = Field(None, description="adb -s SERIAL; None = the only attached device")
    workdir: str = Field("/data/local/tmp", description="the one world-writable place on a stock phone")
    # A stock Android has no Python: Termux's is the usual one (run as the shell user it needs a readable path).
    python: str = "python3"
    adb: str = Field("adb", description="adb executable")

    _serial = _fields("serial", "serial")
    _paths = _fields("path", "workdir", "python", "adb")


Reach = Annotated[Union[LocalReach, SshReach, AdbReach], Field(discriminator="kind")]


@dataclass(frozen=True)
class ExecResult:
    returncode: int
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def stderr_tail(self, lines: int = 8, chars: int = 1500) -> str:
        tail = "\n".join(self.stderr.strip().splitlines()[-lines:])
        return tail[-chars:]


def run_local(argv: list[str], timeout_s: float, cwd: Optional[str] = None, env: Optional[dict] = None) -> ExecResult:
    """subprocess.run as data: missing executable -> 127, timeout -> timed_out (the child is killed)."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s,
                           stdin=subprocess.DEVNULL)
        return ExecResult(p.returncode, p.stdout, p.stderr, time.perf_counter() - t0)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return ExecResult(124, out, err + f"\ntimed out after {timeout_s:g} s", time.perf_counter() - t0, True)
    except OSError as e:  # executable not found / not executable
        return ExecResult(127, "", f"cannot run {argv[0]!r}: {e}", time.perf_counter() - t0)


class Transport(ABC):
    """push / exec / pull against a per-run working directory on the device; a context manager that cleans up."""

    kind: str
    reach: BaseModel
    _workdir: Optional[str] = None

    @abstractmethod
    def _ensure_workdir(self) -> Optional[ExecResult]:
        """Create the device workdir (self._workdir) once; the failure as data, or None when it exists."""

    @property
    def workdir(self) -> Optional[str]:
        """The device path every remote_rel is relative to (created on first use), or None when the device could
        not be reached to create it."""
        self._ensure_workdir()
        return self._workdir

    @property
    @abstractmethod
    def python(self) -> str:
        """The interpreter that runs the agent on the device."""

    @abstractmethod
    def push(self, local_path: Path, remote_rel: str) -> ExecResult: ...

    @abstractmethod
    def exec(self, argv: list[str], timeout_s: float) -> ExecResult:
        """Run argv with the workdir as the current directory."""

    @abstractmethod
    def pull(self, remote_rel: str, local_path: Path) -> ExecResult: ...

    @abstractmethod
    def cleanup(self) -> None:
        """Remove the workdir; never raises."""

    def describe(self) -> str:
        return self.kind

    def machine(self) -> str:
        """The device's CPU architecture as `uname -m` prints it (which native runner bundle it takes), or
        "unknown" when the device cannot say."""
        res = self.exec(["uname", "-m"], 30)
        return res.stdout.strip().splitlines()[0] if res.ok and res.stdout.strip() else "unknown"

    def emulator_argv(self) -> list[str]:
        """The prefix that runs a binary of the device's architecture (an emulating transport's qemu); [] on a real
        device."""
        return []

    def has_workdir(self) -> bool:
        """Whether the device workdir exists (False after a failed connect), without trying to connect again."""
        return self._workdir is not None

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()


def make_transport(reach) -> Transport:
    from edgecompress.registry import TRANSPORTS  # maps each kind to its module, imported on first use
    return TRANSPORTS.get(reach.kind)(reach)


_QUERY_FIELDS = {"ssh": {"key", "known_hosts", "workdir", "python", "connect_timeout_s"},
                 "adb": {"workdir", "python", "adb"}, "local": {"python"}}


def parse_target(url: str, profile_reach=None):
    """`local` | `ssh://[user@]host[:port][?key=..&known_hosts=..&python=..&workdir=..]` | `adb://[SERIAL][?...]`.

    Fields the URL leaves out come from the profile's reach when it is of the same kind (key, workdir, python),
    so `--target ssh://pi@10.0.0.7` reuses the rpi4 profile's settings for another board of the same kind.
    """
    url = url.strip()
    # urllib silently drops tabs and newlines inside a URL; a target with any non-printable or non-ASCII
    # character is refused whole instead of being read as some other target.
    odd = next((c for c in url if not (c.isascii() and c.isprintable())), None)
    if odd is not None:
        raise UserInputError(f"target {shown(url)}: character {odd!r} is not allowed in a target URL; "
                             f"type it in plain ASCII")
    if url == "qemu-arm64" or url.startswith("qemu-arm64?"):  # an emulated Pi CPU on this host (transports/qemu.py)
        from edgecompress.transports.qemu import parse_qemu_target
        return parse_qemu_target(url)
    if url == "local":
        base = profile_reach.model_dump() if isinstance(profile_reach, LocalReach) else {}
        return LocalReach(**base)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as e:  # a malformed IPv6 literal ("ssh://u@[::1")
        raise UserInputError(f"target {shown(url)}: {e}; expected ssh://user@[ipv6]:port") from None
    if parts.scheme not in ("ssh", "adb", "local"):
        raise UserInputError(f"target {shown(url)}: expected local, ssh://user@host:port, adb://SERIAL or qemu-arm64")
    if parts.fragment or parts.path not in ("", "/"):
        extra = parts.path + (f"#{parts.fragment}" if parts.fragment else "")
        raise UserInputError(f"target {shown(url)}: {shown(extra)} has no meaning in a target; options go after "
                             f"'?', e.g. ssh://pi@host?workdir=/tmp")
    kind = parts.scheme
    base = profile_reach.model_dump() if profile_reach is not None and profile_reach.kind == kind else {}
    query = dict(urllib.parse.parse_qsl(parts.query))
    unknown = set(query) - _QUERY_FIELDS[kind]
    if unknown:
        raise UserInputError(f"target {shown(url)}: unknown option(s) {shown(sorted(unknown))}; known: "
                              f"{sorted(_QUERY_FIELDS[kind])}")
    fields = {**base, **query, "kind": kind}
    try:
        if kind == "ssh":
            if not parts.hostname:
                raise UserInputError(f"target {shown(url)}: no host; expected ssh://user@host:port")
            fields["host"] = parts.hostname
            if parts.username:
                fields["user"] = urllib.parse.unquote(parts.username)
            if parts.port:
                fields["port"] = parts.port
            return SshReach(**fields)
        if kind == "adb":
            if parts.netloc:
                fields["serial"] = urllib.parse.unquote(parts.netloc)
            return AdbReach(**fields)
        return LocalReach(**fields)
    except ValidationError as e:
        raise UserInputError(first_error(e, f"target {shown(url)}")) from None
    except ValueError as e:  # urllib: port out of range / not a number
        raise UserInputError(f"target {shown(url)}: {e}") from None
