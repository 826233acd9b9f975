"""What every config schema shares: the frozen, closed pydantic base, the one-line error for a validation failure,
and reading a YAML file a user wrote (recipe, device profile).

Errors echo the user's value, but bounded: a 1 MB name or a deeply nested value must not become a 1 MB error line.
"""
from __future__ import annotations

import reprlib
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from edgecompress.errors import UserInputError

MAX_YAML_ALIASES = 64  # a recipe or profile never needs more; an alias bomb needs many to blow up

_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict, _short.maxlevel = 80, 80, 6, 6, 2


def shown(value: object) -> str:
    """A user's value for an error message, at most a line long whatever its size."""
    return _short.repr(value)


class Cfg(BaseModel):
    # allow_inf_nan=False: `epochs: .inf` or a NaN learning rate passes `gt=0` checks and fails only mid-training.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def first_error(e: ValidationError, source: str, hint: str = "", tags: tuple[str, ...] = ()) -> str:
    """The first validation error as one line: `source: field 'a.b[2].c': message (got value)`.

    `tags` are discriminator values pydantic inserts after a list index (stages[1].prune.x); the user never wrote
    them, so they are dropped from the path."""
    err = e.errors()[0]
    parts: list[str] = []
    for p in err["loc"]:
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        elif (p in tags and parts and parts[-1].endswith("]")) or str(p).startswith("function-"):
            continue
        else:
            parts.append(str(p))
    loc = ".".join(parts) or "<top level>"
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{shown(loc)[1:-1]}'; remove it or check the spelling{hint}"
    msg = err["msg"].removeprefix("Value error, ")
    got = f" (got {shown(err['input'])})" if "input" in err and not isinstance(err["input"], dict) else ""
    return f"{source}: field '{loc}': {msg}{got}"


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents with more than MAX_YAML_ALIASES aliases (billion-laughs expansion)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases = getattr(self, "_aliases", 0) + 1
            if self._aliases > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} YAML aliases (&/*); write the values out")
        return super().compose_node(parent, index)


def parse_yaml(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserInputError(f"{source}: malformed YAML{where}: {problem}; fix the syntax") from None


def read_yaml(path: Path, what: str) -> object:
    """A user's YAML file, read as UTF-8 (a BOM is dropped); a missing file, a folder or an unreadable file is one
    line naming it."""
    p = Path(path)
    if p.is_dir():
        raise UserInputError(f"{what} {shown(str(p))[1:-1]} is a directory; pass a YAML file")
    if not p.exists():
        raise UserInputError(f"{what} {shown(str(p))[1:-1]} not found; pass an existing YAML file")
    if not p.is_file():
        raise UserInputError(f"{what} {shown(str(p))[1:-1]} is not a regular file; pass a YAML file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserInputError(f"{p}: not UTF-8 text; save the {what} as UTF-8") from None
    except OSError as e:
        raise UserInputError(f"{what} {p}: cannot read ({e.strerror or e})") from None
    return parse_yaml(text, str(p))
