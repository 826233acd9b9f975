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

from edgecompress.errors import RuntimeFailure

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
        return cls(Path(path), manifest)

    def verify(self) -> Optional[str]:
        """None if every listed file matches its sha256, else a one-line reason."""
        for rel, info in self.manifest.get("files", {}).items():
            p = self.path / rel
            if not p.is_file():
                return f"{p} is missing"
            if p.stat().st_size != info["bytes"] or sha256_file(p) != info["sha256"]:
                return f"{p} does not match its sha256 in {MANIFEST}"
        return None


class Store:
    """A folder of artifacts, `<root>/<step>-<id>/`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        for tmp in self.root.glob(".tmp-*"):
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
            final = self.path_for(step, aid)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise RuntimeFailure(f"disk full while writing the {step} artifact under {self.root}; free space "
                                     "(or set EDGECOMPRESS_HOME to a bigger disk) and rerun: finished steps are kept") from None
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
