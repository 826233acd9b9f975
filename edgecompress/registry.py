"""The one registry: every component kind (stage, format, transport, task) is a table of rows, one row per
component, declared once.

A row is a small frozen object: the component's name (the string recipes, profiles and target URLs use), the
config class or facts the schemas need, and the module that implements it. The recipe and profile schemas, `plan`,
the target parser and the step graph read the rows; the implementing module is imported on first use of that name
only, so `plan` stays fast (no onnxruntime/executorch import) and one broken optional toolchain cannot take down the
others. Adding a component is its row plus its module: nothing else names it.

Rows are declared where their facts live: a stage by decorating its config class with `@stage(...)` (recipe.py; the
config type is the key, as in torchao), a format by a `FormatSpec` row (formats.py), a transport by a
`TransportSpec` row beside its reach config (transports/base.py), a task by a `TaskSpec` (tasks.py).
"""
from __future__ import annotations

import importlib
import threading
from types import MappingProxyType
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """name -> row (declared facts) and name -> implementation (registered by the row's module on import)."""

    def __init__(self, kind: str, rows_module: str):
        """rows_module declares the built-in rows; it is imported before the first lookup, so asking the registry
        works whatever the caller imported before."""
        self.kind = kind
        self._rows_module = rows_module
        self._rows: dict[str, object] = {}
        self.table = MappingProxyType(self._rows)  # name -> row, read-only and live
        self._items: dict[str, T] = {}
        self._lock = threading.Lock()  # fleets look transports up from several threads at once

    def declare(self, row):
        """Add a row (anything with .name and .module); a second, different row under one name is a bug."""
        old = self._rows.get(row.name)
        if old is not None and old != row:
            raise ValueError(f"{self.kind} {row.name!r} declared twice")
        self._rows[row.name] = row
        return row

    def _load_rows(self) -> None:
        if self._rows_module is not None:
            module, self._rows_module = self._rows_module, None
            importlib.import_module(module)

    def row(self, name: str):
        self._load_rows()
        if name not in self._rows:  # schemas only admit declared names: reaching this is a bug, not bad input
            raise LookupError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._rows[name]

    def rows(self) -> list:
        self._load_rows()
        return list(self._rows.values())

    def names(self) -> list[str]:
        self._load_rows()
        return list(self._rows)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator for the implementation of a declared row (used by the row's module)."""
        def deco(obj: T) -> T:
            self.row(name)
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj
        return deco

    def get(self, name: str) -> T:
        row = self.row(name)
        with self._lock:
            if name not in self._items:
                importlib.import_module(row.module)
        if name not in self._items:
            raise LookupError(f"{row.module} does not register {self.kind} {name!r}")
        return self._items[name]


@dataclass(frozen=True)
class StageSpec:
    """A compression stage: its recipe `kind`, its config class, the module that registers its function.

    starts_from_teacher: the stage builds a new model out of the teacher's (distillation), so it must come first and
    at most once, and the runner hands it the teacher's model and tokenizer instead of its parent's."""
    name: str
    config: type
    module: str
    starts_from_teacher: bool = False


STAGES: Registry = Registry("stage", "edgecompress.stage_configs")
EXPORTERS: Registry = Registry("format", "edgecompress.formats")
TRANSPORTS: Registry = Registry("transport", "edgecompress.transports.reach")
TASKS: Registry = Registry("task", "edgecompress.tasks")


def stage(module: str, *, starts_from_teacher: bool = False) -> Callable[[type], type]:
    """Declare a stage on its config class: the class's `kind` default is the stage's name."""
    def deco(cfg: type) -> type:
        name = cfg.model_fields["kind"].default
        STAGES.declare(StageSpec(name, cfg, module, starts_from_teacher))
        return cfg
    return deco


def parse_stage(item):
    """One entry of a recipe's `stages:` list -> the config of its kind (pydantic validates the fields)."""
    if not isinstance(item, dict):
        if any(isinstance(item, r.config) for r in STAGES.rows()):
            return item
        raise ValueError(f"each stage is a mapping with a kind ({', '.join(STAGES.names())})")
    kind = item.get("kind")
    if kind not in STAGES.names():
        raise ValueError(f"unknown stage kind {kind!r}; known: {', '.join(STAGES.names())}")
    return STAGES.row(kind).config.model_validate(item)

