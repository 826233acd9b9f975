"""qemu-arm64 transport: an emulated Raspberry Pi CPU on an x86_64 host (qemu-user + an arm64 Debian rootfs).

Int8 kernels differ by architecture (onnxruntime's u8s8 NEON GEMMs vs x86 VNNI/AVX2, XNNPACK's ARM paths), so
an artifact that agrees with torch on x86 can still disagree on a Pi. Until a board is attached, this target
runs the same bench agent on the arm64 wheels of the runtimes, emulated instruction by instruction.

How it runs (docs/qemu-arm64.md has the long form):
- The rootfs (targets/qemu-arm64/build_rootfs.sh, cached in $EDGECOMPRESS_HOME/qemu-arm64-rootfs) holds an
  arm64 python3 and the aarch64 wheels. The device workdir is a fresh directory under ROOTFS/tmp.
- exec runs argv on the HOST with the workdir as cwd (the "device shell" is the host's sh: it only changes
  directory), and `self.python` is a launcher that starts ROOTFS's arm64 python under
  `qemu-aarch64-static -cpu cortex-a72 -L ROOTFS`. Only the agent is emulated; no binfmt_misc registration and
  no chroot are needed (a container rarely allows either, and binfmt changes the whole host).
- The agent gets EDGECOMPRESS_EMULATOR in its environment and reports "emulated": true with it. Latency under
  qemu is NOT a device figure (emulation is 10-50x slower and its relative costs differ); labels are.
"""
from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

from edgecompress.registry import TRANSPORTS
from edgecompress.transports.base import ExecResult, Transport, run_local
from edgecompress.transports.reach import QemuReach
from edgecompress.transports.local import copy_into, copy_out_of

KIND = "qemu-arm64"
STAMP = ".edgecompress-rootfs-stamp"
LAUNCHER = ".edgecompress-python"


def build_script() -> Path:
    """The rootfs build script as shipped (edgecompress/resources/targets -> top-level targets/)."""
    import importlib.resources
    return Path(str(importlib.resources.files("edgecompress") / "resources" / "targets" / "qemu-arm64"
                    / "build_rootfs.sh"))


def build_command(reach: Optional["QemuReach"] = None) -> str:
    # The folder is passed explicitly: sudo drops EDGECOMPRESS_HOME and HOME would become root's.
    return f"sudo bash {build_script()} {shlex.quote(str(rootfs_path(reach)))}"


def rootfs_path(reach: Optional[QemuReach] = None) -> Path:
    from edgecompress.paths import qemu_rootfs_dir
    raw = (reach.rootfs if reach is not None else None) or os.environ.get("EDGECOMPRESS_QEMU_ROOTFS")
    return Path(raw).expanduser() if raw else qemu_rootfs_dir()


def rootfs_problem(reach: Optional[QemuReach] = None) -> Optional[str]:
    """Why this target cannot run yet (one line naming the fix), or None when it can."""
    reach = reach or QemuReach()
    root = rootfs_path(reach)
    if not (root / STAMP).is_file():
        return f"qemu-arm64 rootfs not built at {root}: run `{build_command(reach)}` (about a minute, see docs/qemu-arm64.md)"
    if shutil.which(reach.qemu) is None:
        return f"{reach.qemu} not found: apt-get install qemu-user-static"
    return None


@TRANSPORTS.register(KIND)
class QemuArm64Transport(Transport):
    kind = KIND

    def __init__(self, reach: Optional[QemuReach] = None):
        self.reach = reach or QemuReach()
        self.rootfs = rootfs_path(self.reach)
        self._workdir: Optional[str] = None
        self._problem: Optional[str] = None

    def _ensure_workdir(self) -> Optional[ExecResult]:
        if self._workdir is not None:
            return None
        t0 = time.perf_counter()
        self._problem = rootfs_problem(self.reach)
        if self._problem is None:
            try:
                self._workdir = tempfile.mkdtemp(prefix="edgecompress-", dir=self.rootfs / "tmp")
                self._write_launcher(Path(self._workdir) / LAUNCHER)
            except OSError as e:
                self._problem = f"cannot create a workdir in {self.rootfs / 'tmp'}: {e}"
                self.cleanup()
        if self._problem is not None:
            return ExecResult(1, "", self._problem, time.perf_counter() - t0)
        return None

    def _write_launcher(self, path: Path) -> None:
        # A fixed two-line script, every path quoted: argv from callers never passes through a shell string.
        # -I: isolated mode, so no PYTHONPATH/user site of the host leaks x86 packages into the arm64 python.
        guest_python = str(self.rootfs) + "/" + self.reach.python.lstrip("/")
        argv = [self.reach.qemu, "-cpu", self.reach.cpu, "-L", str(self.rootfs), guest_python, "-I"]
        path.write_text("#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in argv) + ' "$@"\n')
        path.chmod(0o755)

    # ---------------------------------------------------------------- interface

    @property
    def python(self) -> str:
        """The launcher (host path) that runs the rootfs's arm64 python under qemu."""
        self._ensure_workdir()
        return str(Path(self._workdir) / LAUNCHER) if self._workdir else self.reach.python

    def emulator(self) -> str:
        return f"{Path(self.reach.qemu).name} -cpu {self.reach.cpu}"

    def describe(self) -> str:
        return f"{KIND} (emulated {self.reach.cpu}, {self.rootfs})"

    def machine(self) -> str:
        return "aarch64"

    def emulator_argv(self) -> list[str]:
        return [self.reach.qemu, "-cpu", self.reach.cpu]

    def push(self, local_path: Path, remote_rel: str) -> ExecResult:
        return self._ensure_workdir() or copy_into(self._workdir, local_path, remote_rel)

    def env(self) -> dict[str, str]:
        """A clean environment: host PATH (to find sh and qemu), no PYTHON*/LD_* of the host."""
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": "/root", "LANG": "C.UTF-8",
               "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
               "EDGECOMPRESS_EMULATOR": self.emulator()}
        for k in ("OMP_NUM_THREADS", "TMPDIR"):
            if k in os.environ:
                env[k] = os.environ[k]
        return env

    def exec(self, argv: list[str], timeout_s: float) -> ExecResult:
        failed = self._ensure_workdir()
        if failed:
            return failed
        return run_local(list(argv), timeout_s, cwd=self._workdir, env=self.env())

    def pull(self, remote_rel: str, local_path: Path) -> ExecResult:
        return self._ensure_workdir() or copy_out_of(self._workdir, remote_rel, local_path)

    def cleanup(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
