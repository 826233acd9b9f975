"""One registry mechanism for stages, exporters and transports.

A component registers under a name (the string used in recipes and on the command line). The recipe and profile
schemas only admit known names (formats come from edgecompress/formats.py), so a typo fails there, with its path.
"""
from __future__ import annotations

import importlib
import threading
from typing import Callable, Generic, TypeVar

from edgecompress.formats import FORMATS

T = TypeVar("T")


class Registry(Generic[T]):
    """name -> component. Each name maps to the module that registers it, imported on first lookup of that
    name only: `plan` stays fast (no onnxruntime/executorch import) and one broken optional toolchain cannot
    take down the others."""

    def __init__(self, kind: str, modules: dict[str, str]):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._modules = dict(modules)
        self._lock = threading.Lock()  # fleets look transports up from several threads at once

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj
        return deco

    def get(self, name: str) -> T:
        with self._lock:
            if name not in self._items and name in self._modules:
                importlib.import_module(self._modules[name])
        if name not in self._items:  # schemas only admit known names: reaching this is a bug, not bad input
            raise LookupError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(set(self._modules) | set(self._items))


STAGES: Registry = Registry("stage", {
    "distill": "edgecompress.compress.distill",
    "prune": "edgecompress.compress.prune", "prune_structured": "edgecompress.compress.structured",
    "trim_vocab": "edgecompress.compress.vocab"})
EXPORTERS: Registry = Registry("exporter", {name: f.exporter for name, f in FORMATS.items()})
TRANSPORTS: Registry = Registry("transport", {
    "local": "edgecompress.transports.local", "ssh": "edgecompress.transports.ssh", "adb": "edgecompress.transports.adb",
    "qemu-arm64": "edgecompress.transports.qemu"})
