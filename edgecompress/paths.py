"""Where edgecompress keeps what outlives a run: one home folder and the places inside it.

$EDGECOMPRESS_HOME (default ~/.cache/edgecompress) holds the artifact store, the native runner builds, the emulated
arm64 root filesystem and the logs of work done outside a run. Every module asks here, so pointing the variable at a
bigger disk or a shared file system moves all of it at once.
"""
from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "EDGECOMPRESS_HOME"


def home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "edgecompress")


def store_dir() -> Path:
    return home() / "store"


def native_dir() -> Path:
    return home() / "native"


def qemu_rootfs_dir() -> Path:
    return home() / "qemu-arm64-rootfs"


def logs_dir() -> Path:
    return home() / "logs"
