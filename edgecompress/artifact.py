"""Artifacts: content-addressed folders with a manifest.json.

id = sha256(step, config, parent ids)[:16]. A step whose artifact exists (and whose files still match their
sha256) is never recomputed, so a killed run resumes after its last finished step. A step writes into a
temporary sibling folder that is renamed into place only when complete: a crash leaves no half artifact
under a real id, only a `.tmp-<host>-<pid>-*` folder that the next run on that host removes once the pid is gone.
Every file is read through `Artifact.checked` (listed, inside the folder, matching its sha256) or after `verify`.
"""
from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import platform
import shutil
import threading
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

    def checked(self, rel: str, missing_ok: bool = False) -> Optional[Path]:
        """The one way to read a file of an artifact: `rel` must be listed in the manifest, lie inside the folder
        and match its sha256 now; the path is returned only then. An unlisted `rel` is None with missing_ok, else
        refused like a changed file (UserInputError naming the fix)."""
        files = self.manifest.get("files")
        info = files.get(rel) if isinstance(files, dict) and isinstance(rel, str) else None
        p = self.inside(rel)
        if info is None:
            if missing_ok:
                return None
            raise UserInputError(f"{self.path / MANIFEST}: {str(rel)[:200]!r} is not a file listed in the manifest; "
                                 f"re-create the artifact (edgecompress run) instead of editing it")
        problem = self._file_problem(p, info)
        if problem:
            raise UserInputError(f"{problem}: the artifact was changed after it was written; re-create it "
                                 f"(edgecompress run) instead of editing it")
        return p

    @staticmethod
    def _file_problem(p: Path, info: object) -> Optional[str]:
        if not isinstance(info, dict) or not p.is_file():
            return f"{p} is missing"
        if p.stat().st_size != info.get("bytes") or sha256_file(p) != info.get("sha256"):
            return f"{p} does not match its sha256 in {MANIFEST}"
        return None

    def hash_problem(self) -> Optional[str]:
        """None if every listed file matches its sha256, else a one-line reason."""
        files = self.manifest.get("files", {})
        if not isinstance(files, dict):
            return f"{self.path / MANIFEST}: 'files' is not a mapping"
        for rel, info in files.items():
            problem = self._file_problem(self.inside(rel), info)
            if problem:
                return problem
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

    @property
    def folder(self) -> Path:
        return self.artifact.path

    def file(self, name: str) -> Optional[Path]:
        """A bundle file (tokenizer.json, labels.json, ...) through Artifact.checked: None when the export does not
        list it, its path when it is inside the folder and matches its sha256, refused otherwise."""
        return self.artifact.checked(name, missing_ok=True)

    def parent_model_dir(self) -> Optional[Path]:
        """The model folder of the artifact this file was exported from, when it sits beside it in the store and
        its files still match their sha256 (torch loads it)."""
        for pid in self.artifact.manifest.get("parents") or []:
            for p in sorted(self.artifact.path.resolve().parent.glob(f"*-{pid}")):
                if not (p / "model" / "config.json").is_file():
                    continue
                try:
                    parent = Artifact.open(p)
                except RuntimeFailure:
                    continue
                if parent.id == pid and "model/config.json" in (parent.manifest.get("files") or {}):
                    problem = parent.hash_problem()
                    if problem:
                        raise UserInputError(f"{problem}: the model this file was exported from was changed "
                                             f"after it was written; re-create it (edgecompress run)")
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
    problem = art.hash_problem()
    if problem:
        raise UserInputError(f"{problem}: the artifact was changed after it was written; re-create it "
                             f"(edgecompress run) instead of editing it")
    listed = list(art.manifest.get("files", {}))
    named = metrics.get("file")
    if named is not None and not isinstance(named, str):
        raise UserInputError(f"{d / MANIFEST}: metrics.file is not a file name (got {str(named)[:40]!r}); "
                             f"re-create the artifact")
    if isinstance(named, str):
        art.inside(named)  # a name that leaves the folder is refused as such, before "is it listed"
        if named not in listed:
            raise UserInputError(f"{d / MANIFEST}: the model file {named[:200]!r} named in metrics.file is not "
                                 f"listed in files; re-create the artifact instead of editing its manifest")
    cands = [named] if isinstance(named, str) else [r for r in listed if r.endswith(FORMATS[fmt].suffix)]
    if len(cands) != 1:
        raise UserInputError(f"{d}: expected one listed {FORMATS[fmt].suffix} file, found {len(cands)}")
    if "io.json" not in listed:
        raise UserInputError(f"{d}: io.json is not listed in {MANIFEST}; re-create the artifact")
    expected = "expected.json" if "expected.json" in listed else None
    return ExportFiles(art, fmt, precision, art.inside(cands[0]), art.inside("io.json"),
                       art.inside(expected) if expected else None)


_held = threading.local()  # (store root, step, id) of every artifact lock this thread holds, whichever Store took it


def _locks_held() -> set:
    if not hasattr(_held, "keys"):
        _held.keys = set()
    return _held.keys


@functools.lru_cache(maxsize=1)
def host_tag() -> str:
    """This machine, for names of in-progress folders on a home that several nodes share: a pid means something
    only on the host (and boot) that issued it."""
    import socket
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return "h" + hashlib.sha256(f"{socket.gethostname()}|{boot}".encode()).hexdigest()[:10]


def _leftover_is_dead(name: str) -> bool:
    """Whether a `.tmp-*`/`.old-*` folder's writer is gone: `.tmp-<host>-<pid>-...` is judged only on its own host
    (another node's pid says nothing here), the older `.tmp-<pid>-...` by its pid."""
    parts = name.split("-")
    if len(parts) < 3:
        return False
    if parts[1].isdigit():
        return not _pid_alive(int(parts[1]))
    return parts[1] == host_tag() and parts[2].isdigit() and not _pid_alive(int(parts[2]))


class Store:
    """A folder of artifacts, `<root>/<step>-<id>/`. Safe on a home shared by several processes and nodes: a writer
    holds the artifact's lock (`lock`), a reader moves a bad artifact aside only while holding it, and leftovers of
    killed writers are removed only by their own host."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        for tmp in [*self.root.glob(".tmp-*"), *self.root.glob(".old-*")]:
            if _leftover_is_dead(tmp.name):
                shutil.rmtree(tmp, ignore_errors=True)

    def path_for(self, step: str, aid: str) -> Path:
        return self.root / f"{step}-{aid}"

    def get(self, step: str, aid: str) -> Optional[Artifact]:
        """The artifact when its files match their sha256, else None. A bad one is moved aside (kept for inspection)
        only under the artifact's lock, after checking again: what looked bad may have been a rebuild caught
        between its two renames, or another reader may have moved it already."""
        p = self.path_for(step, aid)
        if not (p / MANIFEST).is_file():
            return None
        art, problem = self._read(p)
        if problem is None:
            return art
        if self._holds(step, aid):
            return self._quarantine(p)
        with self.lock(step, aid):
            if not (p / MANIFEST).is_file():
                return None
            art, problem = self._read(p)
            return art if problem is None else self._quarantine(p)

    @staticmethod
    def _read(p: Path) -> tuple[Optional[Artifact], Optional[str]]:
        try:
            art = Artifact.open(p)
        except RuntimeFailure as e:
            return None, str(e)
        return art, art.hash_problem()

    @staticmethod
    def _quarantine(p: Path) -> None:
        if p.exists():
            os.rename(p, p.with_name(f"{p.name}.corrupt-{int(time.time())}-{uuid.uuid4().hex[:6]}"))
        return None

    def _holds(self, step: str, aid: str) -> bool:
        return (str(self.root.resolve()), step, aid) in _locks_held()

    @contextmanager
    def create(self, step: str, aid: str, config: Any, parents: list[str]) -> Iterator[Path]:
        """Yield a temp folder to write into; on success it becomes the artifact, on failure it is removed."""
        tmp = self.root / f".tmp-{host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}-{step}"
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
        key, held = (str(self.root.resolve()), step, aid), _locks_held()
        if key in held:  # re-entered by the holder (get() inside a build): flock would wait on itself
            yield
            return
        with open(locks / f"{step}-{aid}.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            held.add(key)
            try:
                yield
            finally:
                held.discard(key)
                fcntl.flock(f, fcntl.LOCK_UN)

    @staticmethod
    def _commit(tmp: Path, final: Path) -> None:
        """Rename the finished folder into place. An existing artifact (a forced rebuild) is first moved aside, so
        the id never points at a half-deleted folder."""
        old = None
        if final.exists():
            old = final.with_name(f".old-{host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}-{final.name}")
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
