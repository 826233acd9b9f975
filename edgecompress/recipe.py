"""The recipe schema: everything a run does, as data.

Frozen pydantic models with extra="forbid", so a typo in a YAML key fails at load time with the field's
path, before any work starts. Closed sets are Literals. Stage configs live in stage_configs.py (re-exported here),
not in the stage modules, so that validating a recipe never imports torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, ValidationError, field_validator, model_validator

from edgecompress.compute import ComputeCfg
from edgecompress.config import Cfg, first_error, read_yaml
from edgecompress.device.protocol import BenchSettings
from edgecompress.errors import UserInputError
from edgecompress.formats import Format, Precision
from edgecompress.registry import STAGES
from edgecompress.stage_configs import (DEFAULT_STUDENT_ARCH, DEFAULT_STUDENT_VOCAB_UNSEEN, KD_ALPHA,  # noqa: F401 - re-exported
                                        KD_TEMPERATURE, AugmentCfg, DistillCfg, KDLoss, MatchCfg, PruneCfg, StageCfg,
                                        StageConfig, StructuredPruneCfg, StudentArchCfg, StudentCfg, StudentVocabCfg,
                                        TrainCfg, VocabTrimCfg)
from edgecompress.tasks import Task

PACKAGED_TEACHER = "packaged:all-MiniLM-L6-v2"
PACKAGED_DATA = "packaged:vader"


class TeacherCfg(Cfg):
    source: str = Field(PACKAGED_TEACHER, description="packaged:all-MiniLM-L6-v2 or a local model directory")
    # A model that already has a task head skips fine-tuning (finetune: null).
    finetune: Optional[TrainCfg] = TrainCfg(epochs=1, learning_rate=5e-5, batch_size=32, max_train_samples=6000)


class DataCfg(Cfg):
    source: str = Field(PACKAGED_DATA, description="packaged:vader or a directory with train/validation/test .csv/.jsonl")
    text_column: str = "text"
    label_column: str = "label"
    domain_column: Optional[str] = "domain"
    max_seq_len: int = Field(128, ge=8, le=4096, description="tokens; longer texts are truncated in training")
    # Integer labels carry no meaning a reader can see: these names (class 0 first) reach labels.json, the report and
    # `predict`. String labels are their own names, so the data loader refuses this for them.
    label_names: Optional[list[str]] = Field(None, min_length=2, description="names of integer classes 0..C-1; "
                                                                              "null = the data folder's labels.json")

    @field_validator("label_names")
    @classmethod
    def _distinct_names(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        if v is not None and (any(not n.strip() for n in v) or len(set(v)) != len(v)):
            raise ValueError("label names must be distinct and non-empty")
        return v


class CalibrationCfg(Cfg):
    """Static int8: activation ranges learnt from `samples` train rows, streamed `batch_size` rows at a time (memory
    stays bounded whatever `samples` is: onnxruntime#10503 saw static BERT calibration pass 100 GB when every
    intermediate tensor of every sample was kept)."""
    samples: int = Field(128, ge=1, description="train rows used to learn activation ranges")
    method: Literal["minmax", "percentile", "entropy"] = "minmax"
    batch_size: int = Field(8, ge=1)
    percentile: float = Field(99.999, gt=90, le=100, description="method percentile: the kept fraction, in percent")


class FallbackCfg(Cfg):
    """Accuracy-aware fallback: rank the quantized layers by sensitivity, keep the most sensitive in fp32 until the
    quantized model's accuracy drop (vs fp32, on held-out rows) is within max_accuracy_drop."""
    max_accuracy_drop: float = Field(0.005, ge=0, le=1, description="absolute, e.g. 0.005 = 0.5 point")
    # sqnr: each layer quantized alone, ranked by the logits' SQNR vs fp32 (cheap, label-free);
    # accuracy: each layer quantized alone, ranked by the accuracy it costs (needs labelled rows, slower).
    metric: Literal["sqnr", "accuracy"] = "sqnr"
    max_layers: int = Field(8, ge=1, description="never keep more than this many layers in fp32")
    samples: int = Field(256, ge=8, description="validation rows the drop is measured on")


TABLE_GROUP = 32  # a 4-bit word-table row's values per scale + zero point (quantize.embedding_group_size)


class QuantSpec(Cfg):
    """Quantization as an intent; each exporter realizes it with its own toolchain.

    Defaults: int8 weights per channel, activations quantized at run time (dynamic).
    The int8 flavour (activation/weight type, per_channel, reduce_range) comes from the device profile when
    preset is "profile" (the pipeline fills it in); preset "manual" takes the fields written here."""
    scheme: Literal["int8"] = "int8"
    activations: Literal["dynamic", "static"] = "dynamic"
    per_channel: bool = True  # per-tensor QInt8 measured cos 0.91 vs fp32 on MiniLM, per-channel 0.98
    # linear: the int8 grid. codebook: k-means per layer (Deep Compression), 2**codebook_bits shared values.
    weights: Literal["linear", "codebook"] = "linear"
    codebook_bits: Literal[4, 8] = 8
    # None and True: an int8 word-embedding table in every format (onnx int8 Gather, ptl/pte 8-bit rows with a scale
    # and zero point per row, tflite EMBEDDING_LOOKUP); False keeps it fp32. The table is about half of a
    # MiniLM-size model.
    embeddings: Optional[bool] = None
    # The word-embedding table's bits when it is quantized: 4 halves it again (pte embedding_4bit, ptl packed rows
    # unpacked by plain ops, onnx GatherBlockQuantized); tflite has no 4-bit lookup here and keeps 8 (noted).
    embedding_bits: Literal[8, 4] = 8
    # A 4-bit row's values per float scale + zero point: the qparams are 8 bytes a group, a third of a 32-value
    # group's bytes at 4 bits, so 64 holds ~1.2x the rows in the same bytes (MiniLM's whole table as the teacher's
    # recall@10 of its own neighbours: 0.940 at 32, 0.929 at 64, 0.923 at 128). A power of 2 (onnxruntime's
    # GatherBlockQuantized) that divides the table's width.
    embedding_group_size: Literal[16, 32, 64, 128] = TABLE_GROUP
    calibration: CalibrationCfg = CalibrationCfg()
    qat: Optional[TrainCfg] = Field(None, description="fake-quant fine-tuning under distillation before export")
    fallback: Optional[FallbackCfg] = None
    preset: Literal["profile", "manual"] = "profile"
    activation_type: Literal["u8", "s8"] = "u8"
    weight_type: Literal["s8", "u8"] = "s8"
    reduce_range: bool = False

    @model_validator(mode="after")
    def _combos(self) -> "QuantSpec":
        # Value-based (not "was it written"), so a dumped spec validates again.
        if self.codebook_bits != 8 and self.weights != "codebook":
            raise ValueError("codebook_bits applies to weights: codebook only")
        if self.embedding_bits != 8 and (self.embeddings is False or self.weights == "codebook"):
            raise ValueError("embedding_bits: 4 quantizes the word-embedding table; it needs the table quantized "
                             "(drop embeddings: false) and linear weights (weights: codebook clusters the table)")
        if self.embedding_group_size != TABLE_GROUP and self.embedding_bits != 4:
            raise ValueError("embedding_group_size groups the values of a 4-bit table row; set embedding_bits: 4 or "
                             "drop embedding_group_size")
        if self.weights == "codebook":
            if self.activations == "static":
                raise ValueError("codebook weights run as dense fp32 matmuls; activations: static needs linear int8 "
                                 "weights (use weights: linear)")
            if self.qat is not None or self.fallback is not None:
                raise ValueError("qat and fallback tune the linear int8 grid; they do not apply to weights: codebook")
        if self.calibration != CalibrationCfg() and self.activations != "static":
            raise ValueError("calibration learns static activation ranges; set activations: static or drop calibration")
        if self.calibration.batch_size > self.calibration.samples:
            raise ValueError(f"calibration.batch_size {self.calibration.batch_size} exceeds calibration.samples "
                             f"{self.calibration.samples}")
        if self.activation_type == "s8" and self.weight_type == "u8":
            raise ValueError("s8 activations with u8 weights has no int8 kernel (onnxruntime supports u8/s8, u8/u8, s8/s8)")
        defaults = {"activation_type": "u8", "weight_type": "s8", "reduce_range": False}
        flavour = {k for k, v in defaults.items() if getattr(self, k) != v}
        if self.preset == "profile" and flavour:
            raise ValueError(f"{', '.join(sorted(flavour))} come from the device profile when preset is 'profile'; "
                             f"set preset: manual to choose them here")
        return self

    def with_profile(self, flavour) -> "QuantSpec":
        """preset 'profile': this spec with the device's int8 flavour (profiles.Int8Flavour); 'manual': unchanged."""
        if self.preset != "profile" or flavour is None:
            return self
        data = self.model_dump(exclude_unset=True)
        data.update(preset="manual", activation_type=flavour.activation_type, weight_type=flavour.weight_type,
                    reduce_range=flavour.reduce_range)
        if "per_channel" not in self.model_fields_set:  # a recipe that wrote per_channel keeps its choice
            data["per_channel"] = flavour.per_channel
        return QuantSpec(**data)




class ExportCfg(Cfg):
    formats: list[Format] = Field(["onnx", "ptl", "pte"], min_length=1)
    precisions: list[Precision] = Field(["int8"], min_length=1)
    max_seq_len: int = Field(128, ge=8, le=4096, description="upper bound of the sequence axis in exported files")
    parity_shapes: list[tuple[int, int]] = Field(
        [(1, 17), (3, 41)], description="(batch, seq) shapes for parity, on purpose not the export shape")
    max_test_samples: Optional[int] = Field(None, ge=1, description="None = the whole test split")

    @model_validator(mode="after")
    def _shapes_fit(self) -> "ExportCfg":
        for b, s in self.parity_shapes:
            if b < 1 or not 1 <= s <= self.max_seq_len:
                raise ValueError(f"parity shape ({b}, {s}) must have batch >= 1 and 1 <= seq <= max_seq_len")
        return self


BenchCfg = BenchSettings  # the recipe's `bench:` section is the device-run contract itself


class FitCfg(Cfg):
    """The search space of `edgecompress fit`: every combination is a candidate student, sliced from the teacher,
    exported and measured on the target before any training. Widths are whole heads of the teacher's head size."""
    depths: Optional[list[int]] = Field(None, min_length=1, description="encoder layers; null = 2, 3, 4 (up to the "
                                                                         "teacher's)")
    widths: Optional[list[int]] = Field(None, min_length=1, description="hidden size in whole heads; null = about 1/3, "
                                        "1/2 and 2/3 of the teacher's (MiniLM-L6-H384: 128, 192, 256)")
    ffn_ratios: list[float] = Field([2.0, 3.0], min_length=1, description="FFN width / hidden size")
    vocab_min_counts: list[Optional[int]] = Field([None, 3], min_length=1,
                                                  description="trim the vocabulary to tokens seen this often in the "
                                                              "train split; null = keep the whole vocabulary")
    formats: Optional[list[Format]] = Field(None, min_length=1, description="null = the recipe's export.formats: "
                                                                            "the format is a lever like the width")
    top_k: int = Field(2, ge=1, description="feasible candidates distilled with the recipe's full protocol")
    rank_by: Literal["capacity", "proxy"] = "capacity"
    proxy_train_samples: int = Field(1000, ge=16, description="rank_by proxy: rows of the short distillation")
    probe: int = Field(6, ge=2, description="candidates measured before the cost model may skip others")

    @field_validator("depths", "widths")
    @classmethod
    def _positive(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        if v is not None and (any(x < 1 for x in v) or len(set(v)) != len(v)):
            raise ValueError("must be distinct positive integers")
        return v

    @field_validator("ffn_ratios")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        if any(not 0.25 <= x <= 8 for x in v):
            raise ValueError("FFN ratios must lie in [0.25, 8]")
        return v

    @field_validator("vocab_min_counts")
    @classmethod
    def _counts(cls, v: list[Optional[int]]) -> list[Optional[int]]:
        if any(x is not None and x < 1 for x in v):
            raise ValueError("min counts must be >= 1 (or null for no trimming)")
        return v


class EmbeddingCfg(Cfg):
    """task: embedding. pooling/normalize describe the teacher's sentence vector (auto: what its sentence-transformers
    folder declares in modules.json and 1_Pooling/config.json; a plain encoder folder must name a pooling); loss is
    what distillation minimises between the student's and the teacher's pooled vectors."""
    pooling: Literal["auto", "mean", "cls", "max"] = "auto"
    normalize: Optional[bool] = Field(None, description="L2-normalise the vector; null = as the folder declares")
    loss: Literal["mse", "cosine", "both"] = "both"
    # MSE on unit vectors is tiny (~1/dim per coordinate): scaled by the width so its gradient is not lost beside
    # the cosine term (sentence-transformers' MSE distillation uses unnormalised targets instead).
    mse_weight: float = Field(1.0, ge=0, description="weight of dim * MSE in loss mse/both")
    # Smaller vectors for a smaller index: the student projects its pooled vector to `dim` (a bias-free linear map
    # before the normalisation, started from PCA of the teacher's train vectors) and is distilled toward the
    # teacher's vectors through the same fixed PCA map. PCA alone keeps recall@10 0.94 / 0.77 / 0.60 of MiniLM's
    # own neighbours at 256 / 128 / 64 dims on VADER's test split (README).
    dim: Optional[int] = Field(None, ge=1, description="output dimensions; null = the encoder's width. At most the "
                                                       "student's width; needs a distill stage")


# What an embedding recipe cannot use yet, or ever: each is trained or judged on class logits and labels.
_CLASSIFICATION_ONLY = (
    ("teacher.finetune", lambda r: r.teacher.finetune is not None,
     "trains a classification head; an embedding teacher is used as is: set teacher.finetune: null"),
    ("quantize.qat", lambda r: r.quantize.qat is not None, "distils class logits; drop it for task: embedding"),
    ("quantize.fallback", lambda r: r.quantize.fallback is not None,
     "ranks layers by class accuracy; drop it for task: embedding"),
)


def _stage_refusal(s) -> Optional[str]:
    """Why a stage config cannot run on an embedding recipe (None: it can)."""
    if s.kind == "distill" and {"alpha", "temperature"} & s.model_fields_set:
        return "alpha and temperature weigh class-logit KD; the embedding loss is embedding.loss: drop them"
    if getattr(s, "method", None) == "taylor" or getattr(s, "importance", None) == "taylor":
        return "taylor importance needs a classification loss (not yet the embedding loss); use magnitude"
    return None


def check_task_settings(r) -> None:
    """Settings of one task on a recipe of another, refused with the field and the fix."""
    if r.task != "embedding":
        if r.embedding is not None and r.embedding.dim is not None:
            raise ValueError(f"embedding.dim applies to task: embedding only (task {r.task} outputs class logits); "
                             f"drop embedding.dim or set task: embedding")
        if r.embedding is not None:
            raise ValueError("embedding: applies to task: embedding only; drop it or set task: embedding")
        return
    if r.embedding_cfg.dim is not None and not any(s.kind == "distill" for s in r.stages):
        raise ValueError("embedding.dim: the projection to fewer dimensions is learnt by the distill stage; add a "
                         "distill stage or drop embedding.dim")
    for field, used, why in _CLASSIFICATION_ONLY:
        if used(r):
            raise ValueError(f"{field} {why}")
    for i, s in enumerate(r.stages):
        why = _stage_refusal(s)
        if why:
            raise ValueError(f"stages[{i}] ({s.kind}): {why}")


def default_stages() -> list:
    """Distil the default student (a trimmed table where the data covers held-out text; small train splits
    augmented), 3 epochs."""
    student = StudentCfg(config=DEFAULT_STUDENT_ARCH, vocab=StudentVocabCfg(max_unseen=DEFAULT_STUDENT_VOCAB_UNSEEN))
    return [DistillCfg(student=student, augment=AugmentCfg(), train=TrainCfg(epochs=3, learning_rate=2e-4, batch_size=32))]


class Recipe(Cfg):
    name: str = Field("default", pattern=r"^[A-Za-z0-9_.-]+$")
    task: Task = Field("classification", description="what the student is trained to do (tasks.py)")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="numpy and torch seeds must fit 32 bits")
    teacher: TeacherCfg = TeacherCfg()
    data: DataCfg = DataCfg()
    # The default recipe's sections (edgecompress/recipes/default.yaml is exactly these): a recipe that writes its
    # own stages or quantize section starts from the stage and QuantSpec field defaults instead.
    stages: list[StageCfg] = Field(default_factory=lambda: default_stages())
    quantize: QuantSpec = QuantSpec(embedding_bits=4)
    export: ExportCfg = ExportCfg()
    bench: BenchCfg = BenchCfg()
    profile: str = "host"
    fit: Optional[FitCfg] = Field(None, description="search space of `edgecompress fit` (None: its defaults)")
    compute: ComputeCfg = Field(ComputeCfg(), description="device and precision of every training and model pass")
    embedding: Optional[EmbeddingCfg] = Field(None, description="task: embedding: pooling, normalisation, loss")

    @property
    def embedding_cfg(self) -> EmbeddingCfg:
        """The embedding section, its defaults when the recipe wrote none."""
        return self.embedding or EmbeddingCfg()

    @property
    def kd(self) -> KDLoss:
        d = next((s for s in self.stages if s.kind == "distill"), None)
        return KDLoss(alpha=d.alpha, temperature=d.temperature) if d is not None else KDLoss()

    @model_validator(mode="after")
    def _order(self) -> "Recipe":
        for i, s in enumerate(self.stages):
            if not STAGES.row(s.kind).starts_from_teacher:
                continue
            if any(t.kind == s.kind for t in self.stages[:i]):
                raise ValueError(f"stages: {s.kind} appears twice; it builds a new student from the teacher, so the "
                                 f"first one's work would be thrown away: keep one {s.kind} stage")
            if i != 0:
                raise ValueError(f"{s.kind} must be the first stage: it builds the student the other stages compress")
        if self.data.max_seq_len > self.export.max_seq_len:
            raise ValueError(f"data.max_seq_len {self.data.max_seq_len} exceeds export.max_seq_len "
                             f"{self.export.max_seq_len}: training and calibration rows would be longer than the "
                             f"exported file accepts; raise export.max_seq_len or lower data.max_seq_len")
        if self.bench.seq_len > self.export.max_seq_len:
            raise ValueError(f"bench.seq_len {self.bench.seq_len} exceeds export.max_seq_len {self.export.max_seq_len}")
        check_task_settings(self)
        return self


DEFAULT_RECIPE_PATH = Path(__file__).parent / "recipes" / "default.yaml"


def parse_recipe(data: object, source: str = "recipe") -> Recipe:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserInputError(f"{source}: the recipe must be a YAML mapping of keys to values, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise UserInputError(first_error(e, source, " (see edgecompress/recipes/default.yaml)")) from None


def _relative_to(folder: Path, value: object) -> object:
    """A relative local path in a recipe means relative to the recipe file's folder, as in every config tool."""
    if not isinstance(value, str) or value.startswith("packaged:") or value.startswith("~"):
        return value
    return value if Path(value).is_absolute() else str(folder / value)


def load_recipe(path: Optional[Path] = None) -> Recipe:
    path = Path(path) if path else DEFAULT_RECIPE_PATH
    data = read_yaml(path, "recipe file")
    if isinstance(data, dict):
        folder = path.resolve().parent
        for section in ("teacher", "data"):
            if isinstance(data.get(section), dict) and "source" in data[section]:
                data[section] = {**data[section], "source": _relative_to(folder, data[section]["source"])}
        prof = data.get("profile")
        if isinstance(prof, str) and prof.endswith((".yaml", ".yml")):
            data["profile"] = _relative_to(folder, prof)
    return parse_recipe(data, str(path))
