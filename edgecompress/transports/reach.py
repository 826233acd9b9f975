"""How a device is reached, as data: one reach config and one row per transport.

A row (TransportSpec) is all the rest of the code needs of a transport: its kind (the target URL's scheme and the
profile's `reach.kind`), the module that registers its Transport class, its reach config, and which config fields
the URL's authority part carries (`ssh://user@host:port`, `adb://SERIAL`); every other field is a `?option`. The
target parser (targets.py) and the profile schema read the rows, so a new transport is its config and row here plus
its module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Optional

from pydantic import BeforeValidator, Field, SerializeAsAny, field_validator

from edgecompress.config import Cfg
from edgecompress.registry import TRANSPORTS


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


class ReachConfig(Cfg):
    """What every reach config has: its kind (the name of its row in registry.TRANSPORTS)."""
    kind: str


class LocalReach(ReachConfig):
    kind: Literal["local"] = "local"
    python: Optional[str] = Field(None, description="interpreter for the agent; default: the one running edgecompress")

    _safe = _fields("path", "python")


class SshReach(ReachConfig):
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


class AdbReach(ReachConfig):
    kind: Literal["adb"] = "adb"
    serial: Optional[str] = Field(None, description="adb -s SERIAL; None = the only attached device")
    workdir: str = Field("/data/local/tmp", description="the one world-writable place on a stock phone")
    # A stock Android has no Python: Termux's is the usual one (run as the shell user it needs a readable path).
    python: str = "python3"
    adb: str = Field("adb", description="adb executable")

    _serial = _fields("serial", "serial")
    _paths = _fields("path", "workdir", "python", "adb")


class QemuReach(ReachConfig):
    kind: Literal["qemu-arm64"] = "qemu-arm64"
    rootfs: Optional[str] = Field(None, description="default: $EDGECOMPRESS_QEMU_ROOTFS or $EDGECOMPRESS_HOME/qemu-arm64-rootfs")
    # Cortex-A72 = Raspberry Pi 4: ARMv8.0 NEON, no sdot/udot, so onnxruntime takes its plain u8s8 NEON kernels as
    # on the board. qemu's default "max" CPU has dot-product and i8mm: other kernels, other rounding.
    cpu: str = Field("cortex-a72", description="qemu -cpu model, e.g. cortex-a76 (Pi 5)")
    qemu: str = Field("qemu-aarch64-static", description="the qemu-user binary")
    python: str = Field("/usr/bin/python3", description="interpreter path inside the rootfs")

    _paths = field_validator("rootfs", "qemu", "python")(classmethod(lambda cls, v: safe_field(v, "path")))

    @field_validator("cpu")
    @classmethod
    def _not_max(cls, v: str) -> str:
        safe_field(v, "name")
        # Measured: under "max" (SME enabled) the default int8 .pte gave sign-flipped logits while cortex-a53/a72/a76
        # and neoverse-n1 agreed with x86 within 0.004. A target that computes wrong answers must not be offered.
        if v in ("max", "host", "any"):
            raise ValueError(f"cpu {v!r} emulates extensions (SME) that give wrong int8 results under qemu; use a "
                             f"real core: cortex-a72 (Pi 4), cortex-a76 (Pi 5), cortex-a53 or neoverse-n1")
        return v


@dataclass(frozen=True)
class TransportSpec:
    """A transport: its kind, the module that registers its Transport class, its reach config, the config fields the
    URL's authority carries, and the URL form shown in messages."""
    name: str
    module: str
    reach: type
    authority: tuple[str, ...] = ()
    url: str = ""

    def options(self) -> list[str]:
        """The config fields a target URL gives as ?options."""
        return sorted(set(self.reach.model_fields) - {"kind", *self.authority})


def declare_transport(spec: TransportSpec) -> TransportSpec:
    return TRANSPORTS.declare(spec)


for _spec in (TransportSpec("local", "edgecompress.transports.local", LocalReach, url="local"),
              TransportSpec("ssh", "edgecompress.transports.ssh", SshReach, ("user", "host", "port"),
                            "ssh://user@host:port"),
              TransportSpec("adb", "edgecompress.transports.adb", AdbReach, ("serial",), "adb://SERIAL"),
              TransportSpec("qemu-arm64", "edgecompress.transports.qemu", QemuReach, url="qemu-arm64")):
    declare_transport(_spec)


def parse_reach(data):
    """A profile's `reach:` -> the config of its kind's row (`local` alone is short for {kind: local})."""
    if isinstance(data, ReachConfig):
        return data
    data = {"kind": "local"} if data == "local" else data
    if not isinstance(data, dict):
        raise ValueError(f"reach must be a mapping with a kind ({', '.join(TRANSPORTS.names())}) or 'local'")
    kind = data.get("kind")
    if kind not in TRANSPORTS.names():
        raise ValueError(f"unknown reach kind {kind!r}; known: {', '.join(TRANSPORTS.names())}")
    return TRANSPORTS.row(kind).reach.model_validate(data)


Reach = Annotated[SerializeAsAny[ReachConfig], BeforeValidator(parse_reach)]
