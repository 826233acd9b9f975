"""Device profiles: what a device is (arch, cores, memory), how to run each format on it, how to reach it,
and the budgets a model must meet there. Built-ins live in device_profiles/*.yaml (shipped as package data
through edgecompress/resources/); a user passes a path to their own YAML.

Frozen pydantic with extra="forbid": a misspelled key fails at load time with its path, before any device work.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from edgecompress.config import Cfg, first_error, parse_yaml, read_yaml, shown
from edgecompress.errors import UserInputError
from edgecompress.formats import FORMATS, PRECISIONS, Format, Runner, Runtime, default_runner
from edgecompress.transports.reach import AdbReach, LocalReach, Reach, SshReach



def budget_key_ok(key: str) -> bool:
    """'default', a format, or FORMAT-PRECISION (the formats as declared when the profile is read)."""
    fmt, _, precision = key.partition("-")
    return key == "default" or (fmt in FORMATS and (not precision or precision in PRECISIONS))


class Cores(Cfg):
    big: int = Field(..., ge=1, description="performance cores (all cores on a homogeneous SoC)")
    little: Optional[int] = Field(None, ge=0, description="efficiency cores of a big.LITTLE SoC")

    @property
    def total(self) -> int:
        return self.big + (self.little or 0)


class RuntimeCfg(Cfg):
    runtime: Optional[Runtime] = Field(None, description="the format's own runtime (formats.py); may be left out")
    threads: int = Field(1, ge=1)
    runner: Optional[Runner] = Field(None, description="native | python; default: native where the format has one")


class Int8Flavour(Cfg):
    """How int8 should be realized on this device (ONNX Runtime QDQ/dynamic knobs, advisory for other exporters)."""
    activation_type: Literal["u8", "s8"] = "u8"
    weight_type: Literal["s8", "u8"] = "s8"
    per_channel: bool = True
    reduce_range: bool = False


class Budget(Cfg):
    """Limits a (format, precision) must meet; None = not budgeted. Field names carry units."""
    p90_ms: Optional[float] = Field(None, gt=0)
    peak_rss_mb: Optional[float] = Field(None, gt=0)
    file_mb: Optional[float] = Field(None, gt=0)
    load_ms: Optional[float] = Field(None, gt=0)
    max_accuracy_drop: Optional[float] = Field(None, ge=0, le=1, description="absolute, e.g. 0.02 = 2 points")

    def merged(self, over: Optional["Budget"]) -> "Budget":
        if over is None:
            return self
        return Budget(**{**self.model_dump(), **over.model_dump(exclude_none=True)})


class DeviceProfile(Cfg):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    arch: Literal["x86_64", "aarch64", "armv7l"]
    os: Literal["linux", "android"]
    cores: Cores
    memory_mb: int = Field(..., ge=64)
    runtimes: dict[Format, RuntimeCfg] = Field(..., min_length=1)
    int8: Int8Flavour = Int8Flavour()
    reach: Reach = LocalReach()
    budgets: dict[str, Budget] = Field(default_factory=dict)

    @field_validator("reach", mode="before")
    @classmethod
    def _reach_shorthand(cls, v):
        return {"kind": "local"} if v == "local" else v

    @field_validator("budgets")
    @classmethod
    def _budget_keys(cls, v: dict[str, Budget]) -> dict[str, Budget]:
        for k in v:
            if not budget_key_ok(k):
                raise ValueError(f"budget key {k!r} must be 'default' or FORMAT-PRECISION like 'onnx-int8'")
        return v

    @model_validator(mode="after")
    def _runtimes_match(self) -> "DeviceProfile":
        for fmt, rc in self.runtimes.items():
            # The runtime that can open each format is the table's; a profile naming another is a typo.
            if rc.runtime is not None and rc.runtime != FORMATS[fmt].runtime:
                raise ValueError(f"runtimes.{fmt}: {rc.runtime} cannot run .{fmt}; use {FORMATS[fmt].runtime}")
            if rc.runner == "native" and not FORMATS[fmt].native_runner:
                raise ValueError(f"runtimes.{fmt}.runner: .{fmt} has no native runner; use runner: python")
            if rc.threads > self.cores.total:
                raise ValueError(f"runtimes.{fmt}.threads {rc.threads} > {self.cores.total} cores")
        return self

    def runner_for(self, fmt: str) -> str:
        rc = self.runtimes.get(fmt)
        return (rc.runner if rc is not None and rc.runner else None) or default_runner(fmt)

    def budget_for(self, key: str, override: Optional[Budget] = None) -> Budget:
        """default, then FORMAT, then FORMAT-PRECISION, then a recipe's override: each later one wins per field."""
        b = self.budgets.get("default", Budget())
        fmt = key.split("-", 1)[0]
        if fmt != key:
            b = b.merged(self.budgets.get(fmt))
        return b.merged(self.budgets.get(key)).merged(override)


def _profiles_dir():
    return importlib.resources.files("edgecompress") / "resources" / "device_profiles"


def list_profiles() -> list[str]:
    return sorted(p.name[:-5] for p in _profiles_dir().iterdir() if p.name.endswith(".yaml"))


def parse_profile(data: object, source: str) -> DeviceProfile:
    if not isinstance(data, dict):
        raise UserInputError(f"{source}: expected a mapping of profile fields, got {type(data).__name__}")
    try:
        return DeviceProfile(**data)
    except ValidationError as e:
        # Discriminated unions keep their tag in the path (reach.ssh.host): it tells which variant was meant.
        raise UserInputError(first_error(e, source, " (see docs/benchmarking.md)")) from None


def load_profile(name_or_path: Union[str, Path]) -> DeviceProfile:
    """A built-in by name (`rpi4`) or a user YAML file (`./my-board.yaml`)."""
    s = str(name_or_path)
    p = Path(s).expanduser()
    if p.suffix in (".yaml", ".yml") or p.is_file() or "/" in s:
        return parse_profile(read_yaml(p, "profile file"), f"profile {p.name}")
    res = _profiles_dir() / f"{s}.yaml"
    if not res.is_file():
        raise UserInputError(f"unknown device profile {shown(s)}; known: {', '.join(list_profiles())} (or a path to a .yaml)")
    prof = parse_profile(parse_yaml(res.read_text(), f"profile {s}"), f"profile {s}")
    if prof.name != s:
        raise UserInputError(f"built-in profile file {s}.yaml names itself {prof.name!r}; they must match")
    return prof


__all__ = ["AdbReach", "Budget", "Cores", "DeviceProfile", "Int8Flavour", "LocalReach", "RuntimeCfg", "SshReach",
           "list_profiles", "load_profile", "parse_profile"]
