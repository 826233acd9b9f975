"""Loading teachers and building students. Local directories only: no model hub at run time."""
from __future__ import annotations

import copy
from pathlib import Path

from edgecompress.errors import UserInputError
from edgecompress.families import DIMS, FAMILIES, FAMILY_NAMES, Family, family_of
from edgecompress.model_dir import check_model_dir

# Every family with an adapter row in families.py; tests/families runs every stage and the ONNX export on each.
SUPPORTED_MODEL_TYPES = FAMILY_NAMES


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


def _layer_key(name: str, prefix: str):
    """(layer index, the name after it) for a tensor of layer i (name = prefix + "i." + rest), else (None, name)."""
    if not name.startswith(prefix):
        return None, name
    i, tail = name[len(prefix):].split(".", 1)
    return int(i), tail


def student_from_teacher_layers(teacher, layers: list[int]):
    """DistilBERT-style student: same width, the chosen teacher layers copied in order, embeddings/pooler/head copied.
    Layer names come from the family's adapter (families.py), so any supported encoder works."""
    fam = family_of(teacher)
    n = fam.dims(teacher.config)["num_hidden_layers"]
    bad = [i for i in layers if i >= n]
    if bad:
        raise UserInputError(f"student.from_teacher_layers: layer {bad[0]} does not exist; the teacher has layers 0..{n - 1}")
    cfg = copy.deepcopy(teacher.config)
    fam.set_dims(cfg, num_hidden_layers=len(layers))
    student = type(teacher)(cfg)
    prefix, targets = fam.layer_prefix(teacher), student.state_dict()
    new_sd = {}
    for k, v in teacher.state_dict().items():
        i, tail = _layer_key(k, prefix)
        if i is None:
            new_sd[k] = v.clone()
        elif i in layers:
            new_sd[f"{prefix}{layers.index(i)}.{tail}"] = v.clone()
    # A tensor only some layers have (ModernBERT's first layer has no attention norm) follows the student's layout.
    optional = fam.optional_layer_tensors
    new_sd = {k: v for k, v in new_sd.items() if k in targets or not (optional and k.endswith(optional))}
    missing, unexpected = student.load_state_dict(new_sd, strict=False)
    if [m for m in missing if "position_ids" not in m and not (optional and m.endswith(optional))] or unexpected:
        raise RuntimeError(f"student init mismatch: missing={missing[:3]} unexpected={unexpected[:3]}")
    return student.eval()


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _evenly_spaced(n_teacher: int, n_student: int) -> list[int]:
    # TinyBERT's uniform map, student layer i <- teacher layer (i+1)*N/M - 1: [1, 3, 5] for 3 of 6, [0, 2, 3, 5] for 4.
    if n_student >= n_teacher:
        return list(range(n_student))
    return [(i + 1) * n_teacher // n_student - 1 for i in range(n_student)]


def teacher_dims(teacher_config) -> dict:
    """{num_hidden_layers, hidden_size, num_attention_heads, intermediate_size} of a transformers config or its
    dict, read through the family's field names (DistilBERT: n_layers, dim, n_heads, hidden_dim)."""
    get = teacher_config.get if isinstance(teacher_config, dict) else lambda k: getattr(teacher_config, k, None)
    fam = FAMILIES.get(get("model_type")) if isinstance(get("model_type"), str) else None
    if fam is not None:
        return fam.dims(teacher_config)
    return {k: get(k) for k in DIMS}


def derive_arch(teacher_config, arch) -> dict:
    """Resolve None fields: layers/width as given, heads keep the teacher's head size, FFN keeps its width ratio.
    teacher_config: a transformers config or its dict (plan reads config.json without importing torch)."""
    from types import SimpleNamespace
    t = SimpleNamespace(**teacher_dims(teacher_config))
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
    init "random" skips copying altogether. Where Q/K/V, the FFN and the LayerNorms live comes from the family's
    adapter (families.py), so every supported family is sliced the same way."""
    import torch
    fam = family_of(teacher)
    t_dims = fam.dims(teacher.config)
    dims = derive_arch(teacher.config, arch)
    cfg = copy.deepcopy(teacher.config)
    fam.set_dims(cfg, **dims)
    for f in fam.follow_hidden:  # e.g. ELECTRA's embedding_size when it equals the width (no projection then)
        if getattr(teacher.config, f, None) == t_dims["hidden_size"]:
            setattr(cfg, f, dims["hidden_size"])
    torch.manual_seed(0)  # the random-initialised tensors are the same on every run
    student = type(teacher)(cfg)
    if arch.init == "random":
        return student.eval()
    layers = _init_layers(arch, t_dims["num_hidden_layers"], dims["num_hidden_layers"])
    sd, prefix, H = teacher.state_dict(), fam.layer_prefix(teacher), t_dims["hidden_size"]
    hid = _kept_hidden_dims(sd, fam, H, dims["hidden_size"])
    per_layer = {s_i: (t_i, *_kept_head_rows_and_neurons(sd, fam, f"{prefix}{t_i}.", t_dims, dims))
                 for s_i, t_i in enumerate(layers)}
    narrower = dims["hidden_size"] < H
    new_sd, fresh = _sliced_state_dict(sd, student.state_dict(), fam, prefix, hid if narrower else None, per_layer, H)
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


def _kept_hidden_dims(sd: dict, fam: Family, H: int, h: int):
    """The h teacher hidden dims with the largest summed |LayerNorm gamma| (all H when the width is unchanged)."""
    import torch
    gamma = sum(v.abs() for k, v in sd.items() if k.endswith(fam.layer_norms) and v.shape == (H,))
    return _top(gamma, h) if h < H else torch.arange(H)


def _kept_head_rows_and_neurons(sd: dict, fam: Family, p: str, t_dims: dict, dims: dict):
    """For the teacher layer whose tensors start with p: the Q/K/V rows of the kept heads (None when the head size
    changes or heads are added: no consistent subset) and the kept FFN neurons (None when the FFN grows)."""
    import torch
    H, n_heads = t_dims["hidden_size"], t_dims["num_attention_heads"]
    t_hd, s_hd = H // n_heads, dims["hidden_size"] // dims["num_attention_heads"]
    attn_rows = None
    if s_hd == t_hd and dims["num_attention_heads"] <= n_heads:
        o = sd[f"{p}{fam.layer.attn_out}.weight"]                    # (H, heads*hd)
        head_norm = o.reshape(H, n_heads, t_hd).pow(2).sum((0, 2))
        heads = _top(head_norm, dims["num_attention_heads"])
        attn_rows = (heads[:, None] * t_hd + torch.arange(t_hd)).reshape(-1)
    w_in, w_out = sd[f"{p}{fam.layer.ffn_in}.weight"], sd[f"{p}{fam.layer.ffn_out}.weight"]
    inter = w_out.shape[1]
    # A gated FFN's neuron is a row in each half of W_in ([input; gate]): its norm spans both.
    in_norm = w_in.reshape(2, inter, -1).pow(2).sum((0, 2)).sqrt() if fam.layer.ffn_glu else w_in.norm(dim=1)
    ffn = _top(in_norm * w_out.norm(dim=0), dims["intermediate_size"]) if dims["intermediate_size"] <= inter else None
    return attn_rows, ffn


def _blocks(idx, n_blocks: int, rows: int):
    """Row indices repeated in each of n_blocks equal blocks (fused [Q; K; V], gated [input; gate])."""
    import torch
    if idx is None or n_blocks == 1:
        return idx
    return torch.cat([idx + b * (rows // n_blocks) for b in range(n_blocks)])


def _slice_plan(fam: Family, tail, src, target, hid, attn_rows, ffn, H: int) -> list:
    """Per dim of a teacher tensor, the indices to keep (None = the whole dim). tail: the name inside its layer
    ("attention.self.query.weight"), None outside the layers."""
    L = fam.layer
    module, _, kind = (tail or "").rpartition(".")
    if tail is not None:
        if module in L.qkv + L.extra_head_rows:
            rows = _blocks(attn_rows, fam.head_blocks(), src.shape[0])
            return [rows, hid] if src.ndim == 2 else [rows]
        if module == L.attn_out and kind == "weight":
            return [hid, attn_rows]
        if module == L.ffn_in:
            rows = _blocks(ffn, 2 if L.ffn_glu else 1, src.shape[0])
            return [rows, hid] if src.ndim == 2 else [rows]
        if module == L.ffn_out and kind == "weight":                   # (H, I)
            return [hid, ffn]
    # Embeddings, LayerNorms, biases of the width, pooler, classifier: a dim as wide as the teacher's hidden state
    # that the student narrows is the residual stream (keep the kept dims); any other dim is copied whole.
    return [hid if hid is not None and s == H and t != s else None for s, t in zip(src.shape, target.shape)]


def _sliced_state_dict(sd: dict, targets: dict, fam: Family, prefix: str, hid, per_layer: dict,
                       H: int) -> tuple[dict, list[str]]:
    """The student's tensors sliced out of the teacher's state dict, and the names left to their fresh init.
    hid: kept hidden dims, or None when the width is unchanged; per_layer: student layer -> (teacher layer,
    attention rows, FFN neurons)."""
    new_sd, fresh = {}, []
    for name, target in targets.items():
        s_i, tail = _layer_key(name, prefix)
        if s_i is None:
            src_name, attn_rows, ffn, tail = name, None, None, None
        else:
            t_i, attn_rows, ffn = per_layer[s_i]
            src_name = f"{prefix}{t_i}.{tail}"
        src = sd.get(src_name)
        if src is None or src.ndim != target.ndim:
            fresh.append(name)
            continue
        plan = _slice_plan(fam, tail, src, target, hid, attn_rows, ffn, H)
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
    n_t = int(teacher_dims(teacher_config)["num_hidden_layers"])
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


def set_embedding_projection(model, weight) -> None:
    """Give an embedder (embedding.py) its output projection, pooled width -> weight.shape[0] dims (embedding.dim).

    The one place that makes the module: the embedder's __init__ calls it again from config.embedding_dim, so
    save_pretrained/from_pretrained round-trip it, and the exporters trace it as part of forward. No bias, on purpose:
    the map then commutes with scaling, so normalise(W x) is the same for the student's unnormalised pooled vector and
    for the teacher's normalised one (with a bias the PCA start would not be the PCA solution); sentence-transformers'
    PCA recipe uses a bias-free Dense for the same reason."""
    import torch
    from torch import nn
    dim, width = weight.shape
    lin = nn.Linear(int(width), int(dim), bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(weight, dtype=lin.weight.dtype))
    model.config.embedding_dim = int(dim)
    model.embedding_projection = lin
