"""What every transport shares: ExecResult and the interface (how a device is reached is reach.py, the target URL
parser targets.py).

A transport never raises on a non-zero exit, an unreachable host or a timeout: it returns an ExecResult that
carries the device's returncode and stderr (TVM's RunnerResult idea), so a fleet run reports one broken Pi
as a row in the results instead of losing the other devices' numbers to a traceback.
"""
from __future__ import annotations

import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pydantic import BaseModel

from edgecompress.registry import TRANSPORTS


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
    return TRANSPORTS.get(reach.kind)(reach)  # the kind's module is imported on first use
