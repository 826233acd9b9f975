"""How a teacher folder turns token states into one sentence vector: read from a sentence-transformers folder
(`modules.json` lists a Pooling module whose `config.json` sets the mode, and maybe a Normalize module), or named in
the recipe for a plain encoder folder. Torch-free: `plan` resolves it before any work.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgecompress.errors import UserInputError

MODES = ("mean", "cls", "max")
_ST_MODE_KEYS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                 "pooling_mode_max_tokens": "max"}


@dataclass(frozen=True)
class Pooling:
    mode: str         # mean | cls | max
    normalize: bool   # L2-normalise the pooled vector


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        raise UserInputError(f"{path}: not readable JSON; re-save the {what} with sentence-transformers") from None


def declared_pooling(folder: Path) -> Optional[Pooling]:
    """What a sentence-transformers folder declares; None for a plain encoder folder (no modules.json)."""
    modules_file = Path(folder) / "modules.json"
    if not modules_file.is_file():
        return None
    modules = _read_json(modules_file, "model")
    if not isinstance(modules, list):
        raise UserInputError(f"{modules_file}: a list of modules was expected; re-save the model with "
                             f"sentence-transformers")
    types = {str(m.get("type", "")).rsplit(".", 1)[-1]: m for m in modules if isinstance(m, dict)}
    if "Pooling" not in types:
        return None
    sub = str(types["Pooling"].get("path", ""))
    cfg_file = (Path(folder) / sub / "config.json").resolve()
    if Path(folder).resolve() not in cfg_file.parents:  # a path in a file we did not write stays in its folder
        raise UserInputError(f"{modules_file}: the Pooling path {sub!r} leaves the model folder")
    cfg = _read_json(cfg_file, "pooling config")
    on = [mode for key, mode in _ST_MODE_KEYS.items() if isinstance(cfg, dict) and cfg.get(key)]
    others = [k for k, v in (cfg.items() if isinstance(cfg, dict) else ())
              if k.startswith("pooling_mode_") and k not in _ST_MODE_KEYS and v]
    if len(on) != 1 or others:
        raise UserInputError(f"{cfg_file}: pooling {', '.join(on + others) or 'none'}; edgecompress exports exactly "
                             f"one of mean, cls, max pooling: re-save the model with one")
    if "Dense" in types and not _saved_projection(Path(folder)):
        # A Dense module changes every vector after pooling; reading the folder without it would distil a student
        # toward vectors the model never produces.
        raise UserInputError(f"{modules_file}: a Dense module after pooling is supported only in a folder edgecompress "
                             f"saved (config.json embedding_dim); use the encoder without its Dense module")
    return Pooling(on[0], "Normalize" in types)


def _saved_projection(folder: Path) -> bool:
    """The folder's config.json carries embedding_dim: its Dense module is the embedder's own projection, which
    loading the encoder restores (embedding.py)."""
    cfg_file = folder / "config.json"
    cfg = _read_json(cfg_file, "model config") if cfg_file.is_file() else {}
    return isinstance(cfg, dict) and bool(cfg.get("embedding_dim"))


def resolve_pooling(folder: Path, mode: str = "auto", normalize: Optional[bool] = None) -> Pooling:
    """The pooling the recipe asks for, checked against what the folder declares (a teacher trained with mean
    pooling gives other vectors under cls pooling: the student would learn the wrong target)."""
    declared = declared_pooling(folder)
    if declared is None:
        if mode == "auto":
            raise UserInputError(f"{folder}: a plain encoder folder declares no pooling (no modules.json); set "
                                 f"embedding.pooling to one of {', '.join(MODES)}")
        return Pooling(mode, True if normalize is None else normalize)
    if mode not in ("auto", declared.mode):
        raise UserInputError(f"embedding.pooling {mode} but {folder} declares {declared.mode} pooling "
                             f"(1_Pooling/config.json); set embedding.pooling: auto or {declared.mode}")
    if normalize is not None and normalize != declared.normalize:
        raise UserInputError(f"embedding.normalize {str(normalize).lower()} but {folder} "
                             f"{'has' if declared.normalize else 'has no'} Normalize module; set embedding.normalize: "
                             f"null")
    return declared


def write_st_folder(folder: Path, pooling: Pooling, width: int, projection=None) -> None:
    """modules.json + 1_Pooling/config.json (+ 2_Dense, the projection [dim, width] of embedding.dim) (+ Normalize)
    beside a saved encoder: the folder sentence-transformers and `declared_pooling` read. The Dense module is written
    as sentence-transformers writes its own (config.json + model.safetensors with `linear.weight`, no bias, identity
    activation), so it loads the same vectors; numpy in, so this module stays torch-free."""
    folder = Path(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if projection is not None:
        _write_dense(folder / "2_Dense", projection)
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    if pooling.normalize:
        i = len(modules)
        modules.append({"idx": i, "name": str(i), "path": f"{i}_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (folder / f"{i}_Normalize").mkdir(exist_ok=True)
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    cfg = {"word_embedding_dimension": width, **{k: m == pooling.mode for k, m in _ST_MODE_KEYS.items()},
           "pooling_mode_mean_sqrt_len_tokens": False}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(cfg, indent=2))


def _write_dense(sub: Path, weight) -> None:
    import numpy as np
    from safetensors.numpy import save_file
    w = np.ascontiguousarray(weight, dtype=np.float32)
    sub.mkdir(exist_ok=True)
    (sub / "config.json").write_text(json.dumps({"in_features": int(w.shape[1]), "out_features": int(w.shape[0]),
                                                 "bias": False,
                                                 "activation_function": "torch.nn.modules.linear.Identity"}, indent=2))
    save_file({"linear.weight": w}, str(sub / "model.safetensors"))
