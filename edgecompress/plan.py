"""Validate the whole recipe before any work: schema, teacher folder, tokenizer, data, labels vs head,
exporters x quantization x profile. Cheap by design (no weights, no torch import) so it runs in well
under two seconds and `run` can call it first."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from edgecompress.errors import UserInputError
from edgecompress.graph import Facts, Graph, run_graph
from edgecompress.recipe import Recipe, load_recipe

@dataclass
class Plan:
    recipe: Recipe
    teacher_dir: Path
    data_dir: Path
    num_labels: int
    split_sizes: dict[str, int]
    profile: Optional[object] = None  # profiles.DeviceProfile, loaded once here
    graph: Optional[Graph] = None     # every step `run` executes, with its id
    splits: dict = field(default_factory=dict, repr=False)  # read once here, used by the run's stages
    notes: list[str] = field(default_factory=list)
    fit_candidates: Optional[int] = None  # the size of the recipe's fit space, when it has one
    placement: Optional[object] = None  # compute.Placement: where every training runs, resolved once here
    teacher_head: Optional[object] = None  # the task's load_teacher argument: num_labels, or the embedding's Pooling

    @property
    def steps(self) -> list[str]:
        return [n.label for n in self.graph] if self.graph is not None else []


def teacher_identity(teacher_dir: Path) -> dict:
    """What the teacher step's id covers of the model folder: its weights' hash and its config."""
    from edgecompress.artifact import sha256_file
    return {"weights_sha256": sha256_file(teacher_dir / "model.safetensors")[:16],
            "config": json.loads((teacher_dir / "config.json").read_text())}


def _tokenizer_vocab_size(model_dir: Path) -> Optional[int]:
    tj = model_dir / "tokenizer.json"
    if tj.is_file():
        try:
            tok = json.loads(tj.read_text(encoding="utf-8"))
            vocab, added = tok.get("model", {}).get("vocab"), tok.get("added_tokens", [])
            if isinstance(vocab, dict):
                return max(list(vocab.values()) + [t.get("id", 0) for t in added]) + 1
        except (ValueError, UnicodeDecodeError):
            raise UserInputError(f"{tj}: not valid JSON; re-save the tokenizer with save_pretrained()") from None
    vt = model_dir / "vocab.txt"
    if vt.is_file():
        return sum(1 for _ in open(vt, encoding="utf-8"))
    return None


def make_plan(recipe: Recipe) -> Plan:
    from edgecompress.data import data_dir, load_splits, num_labels
    from edgecompress.model_dir import check_model_dir, resolve_model_dir

    teacher_dir = resolve_model_dir(recipe.teacher.source)
    cfg = check_model_dir(teacher_dir)
    from edgecompress.families import check_family  # torch-free: stage x family and export x family refusals
    check_family(cfg["model_type"], recipe.stages, recipe.export.formats, recipe.export.precisions)
    vocab = _tokenizer_vocab_size(teacher_dir)
    if vocab is not None and vocab > cfg.get("vocab_size", vocab):
        raise UserInputError(f"{teacher_dir}: the tokenizer has {vocab} tokens but the model's embedding has "
                             f"{cfg['vocab_size']}; the tokenizer does not belong to this model")
    for name, n in (("data.max_seq_len", recipe.data.max_seq_len), ("export.max_seq_len", recipe.export.max_seq_len)):
        if n > cfg.get("max_position_embeddings", n):
            raise UserInputError(f"{name} {n} exceeds the model's max_position_embeddings {cfg['max_position_embeddings']}")
    ddir = data_dir(recipe.data)
    from edgecompress.tasks import task_row
    # A label column the recipe names must exist, even where the task could do without (a typo must not silently
    # drop the probes it asked for).
    splits = load_splits(recipe.data, task_row(recipe).needs_labels or "label_column" in recipe.data.model_fields_set)
    n_labels = num_labels(splits)
    teacher_head, extra = _task_head(recipe, teacher_dir, cfg, n_labels)
    check_embedding_dim(recipe, cfg, len(splits["train"]))
    for s in recipe.stages:
        if s.kind == "distill":
            from edgecompress.modeling import check_layer_map
            check_layer_map(s, cfg)  # student layers/width and the teacher->student match map
    from edgecompress.fitspace import candidates, space_of
    space = space_of(recipe) if recipe.fit is not None else None
    # every width/depth of the space can be sliced from this teacher (and is one this task's student may have)
    cands = candidates(space, cfg, task_row(recipe).keeps_teacher_width) if space else None
    check_embedding_group(recipe, cfg, {c.hidden for c in cands or []})
    from edgecompress.compress.structured import check_plan as check_pruning  # no torch: heads/neurons left
    check_pruning(recipe.stages, cfg)
    from edgecompress.profiles import load_profile
    profile = load_profile(recipe.profile)
    check_formats(recipe, profile)
    if space:  # every candidate is exported int8 in each of the space's formats
        check_formats(recipe, profile, formats=space.formats, precisions=["int8"], field="fit.formats")
    from edgecompress.compute import resolve  # refuses cuda/mps where there is none; no torch on a CPU-only build
    from edgecompress.data import fingerprint
    placement = resolve(recipe.compute)
    labels = splits["train"].label_names if recipe.task == "classification" else []  # an embedding has no classes
    facts = Facts(teacher_identity(teacher_dir), fingerprint(recipe.data), n_labels if labels else 0, labels, **extra)
    return Plan(recipe, teacher_dir, ddir, n_labels, {k: len(v) for k, v in splits.items()}, profile,
                run_graph(recipe, profile, facts, placement), splits,
                fit_candidates=len(cands) if cands is not None else None, placement=placement,
                teacher_head=teacher_head)


def _task_head(recipe: Recipe, teacher_dir: Path, cfg: dict, n_labels: int) -> tuple[object, dict]:
    """What the teacher is loaded with (classification: its number of labels; embedding: the resolved pooling) and
    what the task adds to the teacher's and the stages' ids."""
    if recipe.task == "embedding":
        from edgecompress.pooling import resolve_pooling
        e = recipe.embedding_cfg
        pooling = resolve_pooling(teacher_dir, e.pooling, e.normalize)
        return pooling, {"teacher_extra": {"task": "embedding", "pooling": pooling.mode,
                                           "normalize": pooling.normalize},
                         # embedding.dim only where set: the ids of runs without it stay as they were
                         "stage_extra": {"embedding_loss": {"loss": e.loss, "mse_weight": e.mse_weight},
                                         **({"embedding_dim": e.dim} if e.dim is not None else {})},
                         "teacher_int8": True}
    head = cfg.get("_head_labels")
    if head is not None and head != n_labels:
        raise UserInputError(f"{teacher_dir}: the model head has {head} labels but the data has {n_labels}; "
                             "use data with the head's labels or a headless encoder")
    if head is None and recipe.teacher.finetune is None:
        raise UserInputError(f"{teacher_dir}: the model has no classification head and teacher.finetune is null; "
                             "set teacher.finetune so edgecompress trains one")
    return n_labels, {}


def check_embedding_dim(recipe: Recipe, cfg: dict, train_rows: int) -> None:
    """An embedding student's vector is distilled onto the teacher's element by element: a narrower student needs
    embedding.dim (the teacher's vectors through a PCA map of that width). embedding.dim is at most the student's
    width (the distill stage's student.config.hidden_size, else the teacher's), and PCA of the train split needs at
    least that many rows."""
    d = next((s for s in recipe.stages if s.kind == "distill"), None)
    if recipe.task != "embedding" or d is None:
        return
    from edgecompress.modeling import teacher_dims
    width, t_width = _student_width(cfg, d), teacher_dims(cfg)["hidden_size"]
    dim = recipe.embedding.dim if recipe.embedding is not None else None
    if dim is None:
        if width != t_width:
            raise UserInputError(f"stages.distill.student: width {width} differs from the teacher's {t_width}, and an "
                                 f"embedding student's vector is distilled onto the teacher's; set embedding.dim: "
                                 f"{min(width, t_width)} (the teacher's vectors through PCA) or keep the width")
        return
    if dim > width:
        raise UserInputError(f"embedding.dim {dim} exceeds the student's width {width}; set embedding.dim to at most "
                             f"{width} (null keeps the width)")
    if dim > train_rows:
        raise UserInputError(f"embedding.dim {dim} exceeds the train split's {train_rows} rows its PCA is fitted on; "
                             f"lower embedding.dim or add train rows")


def _student_width(cfg: dict, distill) -> int:
    """A distill stage's student width: its config's (derive_arch), or the teacher's for a student sliced from
    teacher layers."""
    from edgecompress.modeling import derive_arch, teacher_dims
    return (derive_arch(cfg, distill.student.config) if distill.student.config is not None
            else teacher_dims(cfg))["hidden_size"]


def check_embedding_group(recipe: Recipe, cfg: dict, fit_widths: set[int]) -> None:
    """A 4-bit table group the recipe names divides the width of every table it quantizes (the teacher's, each
    distilled student's and each fit candidate's word embeddings); the default 32 falls back per format where it does
    not (a whole row on .pte/.ptl, 16 values on .onnx)."""
    q = recipe.quantize
    if q.embedding_bits != 4 or "embedding_group_size" not in q.model_fields_set:
        return
    from edgecompress.modeling import teacher_dims
    widths = {"the teacher's": cfg.get("embedding_size") or teacher_dims(cfg)["hidden_size"]}
    for st in recipe.stages:
        if st.kind == "distill":  # a factorized table keeps the teacher's embedding_size
            widths["the student's"] = cfg.get("embedding_size") or _student_width(cfg, st)
    fits = [w for w in sorted(fit_widths) if (cfg.get("embedding_size") or w) % q.embedding_group_size]
    for who, width in widths.items():
        if width % q.embedding_group_size:
            raise UserInputError(f"quantize.embedding_group_size {q.embedding_group_size} does not divide "
                                 f"{who} table width {width}; pick a power of 2 that divides it (16, 32, 64, 128)")
    if fits:
        raise UserInputError(f"quantize.embedding_group_size {q.embedding_group_size} does not divide the fit "
                             f"candidates' table width {fits[0]}; pick a smaller group or list fit.widths it divides")


def check_formats(recipe: Recipe, profile, formats=None, precisions=None, field: str = "export.formats") -> None:
    """Every format x quantization x profile combination an exporter would refuse, refused here, before any work
    (the recipe's export formats and precisions unless told)."""
    from edgecompress.formats import FORMATS, install_hint
    formats = recipe.export.formats if formats is None else formats
    precisions = recipe.export.precisions if precisions is None else precisions
    quant = None
    if "int8" in precisions:
        try:  # preset "profile": the device's int8 flavour must make a valid intent too
            quant = recipe.quantize.with_profile(profile.int8)
        except ValueError as e:
            msg = str(e).splitlines()[-1].removeprefix("  Value error, ")
            raise UserInputError(f"profile {profile.name}: its int8 flavour does not fit quantize: {msg}; use "
                                 f"quantize.preset: manual or another profile") from None
    for fmt in formats:
        spec = FORMATS[fmt]
        missing = spec.missing_modules()
        if missing:
            raise UserInputError(f"export format {fmt!r} needs {', '.join(missing)}; run: {install_hint(spec)}")
        why = spec.refusal(quant)
        if why:
            raise UserInputError(f"{field}: {why.replace('export.formats', field)}")
        if profile.runner_for(fmt) == "native":  # the run benches on this host: its compiler builds the runner
            from edgecompress.device.native import compiler_for, resolve_abi
            try:
                compiler_for(resolve_abi(None))
            except UserInputError as e:
                raise UserInputError(f"{e}; or set runtimes.{fmt}.runner: python in profile {profile.name}") from None
        if fmt not in profile.runtimes:
            raise UserInputError(f"{field}: profile {profile.name} has no runtime for .{fmt} (it runs "
                                 f"{', '.join(profile.runtimes)}); drop {fmt} from {field} or use another profile")


def plan_command(recipe_path: Optional[Path], json_output: bool = False) -> int:
    from edgecompress.compute import trainings
    plan = make_plan(load_recipe(recipe_path))
    summary = {"recipe": plan.recipe.name, "teacher": str(plan.teacher_dir), "data": str(plan.data_dir),
               "num_labels": plan.num_labels, "labels": plan.splits["train"].label_names,
               "split_sizes": plan.split_sizes, "profile": plan.recipe.profile,
               "steps": [f"{n.label} ({n.step}-{n.id})" for n in plan.graph],
               "compute": trainings(plan.recipe, plan.placement)}
    if plan.fit_candidates is not None:
        from edgecompress.fitspace import space_of
        summary["fit_candidates"] = {"count": plan.fit_candidates, "formats": list(space_of(plan.recipe).formats)}
    if json_output:
        print(json.dumps({**summary, "steps": plan.steps, "graph": plan.graph.to_json()}))
    else:
        print(f"recipe {summary['recipe']}: OK")
        for k, v in summary.items():
            if k not in ("recipe", "steps"):
                print(f"  {k}: {v}")
        print("  steps (label, artifact):")
        for line in summary["steps"]:
            print(f"    {line}")
    sys.stdout.flush()
    return 0
