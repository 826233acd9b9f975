"""One registry mechanism for stages, exporters and transports.

A component registers under a name (the string used in recipes and on the command line). Lookups of an
unknown name fail with the list of known names, so a typo in a recipe tells the user what they meant.
"""
from __future__ import annotations

import importlib
import threading
from typing import Callable, Generic, TypeVar

from edgecompress.errors import UserInputError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, modules: tuple[str, ...] = ()):
        self.kind = kind
        self._items: dict[str, T] = {}
        # Modules imported on first lookup: registration happens at import time, and importing every exporter
        # eagerly would pull onnxruntime/executorch into `edgecompress plan`, which must stay fast.
        self._modules = modules
        self._loaded = False
        self._lock = threading.Lock()  # fleets look transports up from several threads at once

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj
        return deco

    def _load(self) -> None:
        with self._lock:
            if not self._loaded:
                for m in self._modules:
                    importlib.import_module(m)
                # Marked only after every import finished: another thread must not see a half-filled registry.
                self._loaded = True

    def get(self, name: str) -> T:
        if name not in self._items:
            self._load()
        if name not in self._items:
            raise UserInputError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)


STAGES: Registry = Registry("stage", (
    "edgecompress.compress.finetune", "edgecompress.compress.distill", "edgecompress.compress.prune",
    "edgecompress.compress.structured", "edgecompress.compress.vocab"))
EXPORTERS: Registry = Registry("exporter", (
    "edgecompress.export.onnx", "edgecompress.export.ptl", "edgecompress.export.pte"))
TRANSPORTS: Registry = Registry("transport", (
    "edgecompress.targets.local", "edgecompress.targets.ssh", "edgecompress.targets.adb"))
