"""Artifacts: content-addressed folders with a manifest.json.

id = sha256(step, config, parent ids)[:16]. A step whose artifact exists (and whose files still match their
sha256) is never recomputed, so a killed run resumes after its last finished step. A step writes into a
temporary sibling folder that is renamed into place only when complete: a crash leaves no half artifact
under a real id, only a `.tmp-*` folder that the next run removes.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Optional

from edgecompress.errors import RuntimeFailure, UserInputError

MANIFEST = "manifest.json"
_VERSIONED = ("edgecompress", "torch", "transformers", "onnx", "onnxruntime", "executorch", "torchao", "numpy")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def artifact_id(step: str, config: Any, parents: list[str]) -> str:
    return hashlib.sha256(canonical_json({"step": step, "config": config, "parents": parents}).encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class Artifact:
    path: Path
    manifest: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def metrics(self) -> dict:
        return self.manifest.get("metrics", {})

    def file(self, name: str) -> Path:
        return self.path / name

    @classmethod
    def open(cls, path: Path) -> "Artifact":
        try:
            manifest = json.loads((Path(path) / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise RuntimeFailure(f"{path}: no readable {MANIFEST} ({e}); point at an artifact folder") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("id"), str):
            raise RuntimeFailure(f"{Path(path) / MANIFEST}: not an artifact manifest (no id); point at an artifact "
                                 f"folder")
        return cls(Path(path), manifest)

    def inside(self, rel: str) -> Path:
        """`rel` resolved inside this artifact's folder; a path that leaves it (absolute, `..`, a link out) is
        refused: a manifest must never make the host push or load a file from elsewhere."""
        root = self.path.resolve()
        p = (self.path / str(rel)).resolve()
        if not str(rel) or Path(str(rel)).is_absolute() or (p != root and root not in p.parents):
            raise UserInputError(f"{self.path / MANIFEST}: file {str(rel)[:200]!r} lies outside the artifact folder; "
                                 f"re-create the artifact instead of editing its manifest")
        return p

    def verify(self) -> Optional[str]:
        """None if every listed file matches its sha256, else a one-line reason."""
        files = self.manifest.get("files", {})
        if not isinstance(files, dict):
            return f"{self.path / MANIFEST}: 'files' is not a mapping"
        for rel, info in files.items():
            p = self.inside(rel)
            if not isinstance(info, dict) or not p.is_file():
                return f"{p} is missing"
            if p.stat().st_size != info.get("bytes") or sha256_file(p) != info.get("sha256"):
                return f"{p} does not match its sha256 in {MANIFEST}"
        return None


@dataclass(frozen=True)
class ExportFiles:
    """An export artifact's files, read from its manifest and checked against their hashes before any use."""
    artifact: Artifact
    format: str
    precision: str
    model_file: Path
    io_json: Path
    expected_json: Optional[Path]

    @property
    def key(self) -> str:
        return f"{self.format}-{self.precision}"

    def parent_model_dir(self) -> Optional[Path]:
        """The model folder of the artifact this file was exported from, when it sits beside it in the store."""
        for pid in self.artifact.manifest.get("parents") or []:
            for p in sorted(self.artifact.path.resolve().parent.glob(f"*-{pid}")):
                if (p / "model" / "config.json").is_file():
                    return p / "model"
        return None


def open_export(path: Path) -> ExportFiles:
    """Read an export artifact folder: format and precision from manifest.json (never from file names), every
    listed file inside the folder and matching its sha256. Bad input raises UserInputError with the fix."""
    from edgecompress.formats import FORMATS

    d = Path(path)
    if not (d / MANIFEST).is_file():
        raise UserInputError(f"{d}: no {MANIFEST}; pass an export artifact folder (runs/<recipe>/artifacts/<format>-"
                             f"<precision>)")
    try:
        art = Artifact.open(d)
    except RuntimeFailure as e:
        raise UserInputError(str(e)) from None
    if not isinstance(art.manifest, dict) or not isinstance(art.manifest.get("config"), dict):
        raise UserInputError(f"{d / MANIFEST}: not an artifact manifest (no config mapping)")
    cfg, metrics = art.manifest["config"], art.metrics if isinstance(art.metrics, dict) else {}
    fmt, precision = cfg.get("format"), cfg.get("precision")
    if fmt not in FORMATS or not isinstance(precision, str):
        raise UserInputError(f"{d / MANIFEST}: config.format / config.precision missing or unknown (got "
                             f"{str(fmt)[:40]!r}, {str(precision)[:40]!r}); is this an export artifact?")
    problem = art.verify()
    if problem:
        raise UserInputError(f"{problem}: the artifact was changed after it was written; re-create it "
                             f"(edgecompress run) instead of editing it")
    listed = list(art.manifest.get("files", {}))
    named = metrics.get("file")
    cands = [named] if isinstance(named, str) else [r for r in listed if r.endswith(FORMATS[fmt].suffix)]
    if len(cands) != 1 or cands[0] not in listed:
        raise UserInputError(f"{d}: expected one listed {FORMATS[fmt].suffix} file, found {len(cands)}")
    if "io.json" not in listed:
        raise UserInputError(f"{d}: io.json is not listed in {MANIFEST}; re-create the artifact")
    expected = "expected.json" if "expected.json" in listed else None
    return ExportFiles(art, fmt, precision, art.inside(cands[0]), art.inside("io.json"),
                       art.inside(expected) if expected else None)


class Store:
    """A folder of artifacts, `<root>/<step>-<id>/`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        for tmp in [*self.root.glob(".tmp-*"), *self.root.glob(".old-*")]:
            # Leftovers of a killed step; only the owning pid could still be writing, and it is gone if
            # its pid no longer runs.
            pid = tmp.name.split("-")[1]
            if not pid.isdigit() or not _pid_alive(int(pid)):
                shutil.rmtree(tmp, ignore_errors=True)

    def path_for(self, step: str, aid: str) -> Path:
        return self.root / f"{step}-{aid}"

    def get(self, step: str, aid: str) -> Optional[Artifact]:
        p = self.path_for(step, aid)
        if not (p / MANIFEST).is_file():
            return None
        art = Artifact.open(p)
        problem = art.verify()
        if problem:
            # A corrupted artifact is moved aside (kept for inspection) and recomputed.
            shutil.move(str(p), str(p.with_name(f"{p.name}.corrupt-{int(time.time())}")))
            return None
        return art

    @contextmanager
    def create(self, step: str, aid: str, config: Any, parents: list[str]) -> Iterator[Path]:
        """Yield a temp folder to write into; on success it becomes the artifact, on failure it is removed."""
        tmp = self.root / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{step}"
        tmp.mkdir(parents=True)
        t0 = time.perf_counter()
        try:
            yield tmp
            metrics_path = tmp / "metrics.json"
            metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
            files = {}
            for f in sorted(tmp.rglob("*")):
                if f.is_file():
                    files[str(f.relative_to(tmp))] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
            manifest = {
                "id": aid, "step": step, "config": config, "parents": parents, "files": files,
                "versions": versions(), "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "duration_s": round(time.perf_counter() - t0, 3), "metrics": metrics,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            self._commit(tmp, self.path_for(step, aid))
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise RuntimeFailure(f"disk full while writing the {step} artifact under {self.root}; free space "
                                     "(or set EDGECOMPRESS_HOME to a bigger disk) and rerun: finished steps are kept") from None
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


    @contextmanager
    def lock(self, step: str, aid: str) -> Iterator[None]:
        """Exclusive per artifact id across processes: a second run of the same step on this store waits for the
        first, then finds its artifact instead of building (and racing to rename) its own."""
        import fcntl
        locks = self.root / ".locks"
        locks.mkdir(exist_ok=True)
        with open(locks / f"{step}-{aid}.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @staticmethod
    def _commit(tmp: Path, final: Path) -> None:
        """Rename the finished folder into place. An existing artifact (a forced rebuild) is first moved aside, so
        the id never points at a half-deleted folder."""
        old = None
        if final.exists():
            old = final.with_name(f".old-{os.getpid()}-{uuid.uuid4().hex[:8]}-{final.name}")
            os.rename(final, old)
        os.rename(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
