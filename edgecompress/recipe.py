"""The recipe schema: everything a run does, as data.

Frozen pydantic models with extra="forbid", so a typo in a YAML key fails at load time with the field's
path, before any work starts. Closed sets are Literals. Stage configs live here (not in the stage modules)
so that validating a recipe never imports torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from edgecompress.compute import ComputeCfg
from edgecompress.config import Cfg, first_error, read_yaml
from edgecompress.errors import UserInputError
from edgecompress.formats import Format, Precision

PACKAGED_TEACHER = "packaged:all-MiniLM-L6-v2"
PACKAGED_DATA = "packaged:vader"


class TrainCfg(Cfg):
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, ge=1)
    max_train_samples: Optional[int] = Field(None, ge=1, description="None = the whole train split")
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)


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


class StudentArchCfg(Cfg):
    """A student built from a config (narrower/shallower than the teacher). None fields follow the teacher: the
    width copies the teacher's; with a narrower width, heads keep the teacher's head size and the FFN keeps the
    teacher's width ratio (modeling.student_from_config)."""
    num_hidden_layers: int = Field(3, ge=1)
    hidden_size: Optional[int] = Field(None, ge=8)
    num_attention_heads: Optional[int] = Field(None, ge=1)
    intermediate_size: Optional[int] = Field(None, ge=1)
    # How to initialise: "teacher_layers" copies/slices teacher weights where shapes allow (layers picked by
    # init_from_teacher_layers, evenly spaced when None), "random" uses the config's initializer_range.
    init: Literal["teacher_layers", "random"] = "teacher_layers"
    init_from_teacher_layers: Optional[list[int]] = None

    @model_validator(mode="after")
    def _heads_divide(self) -> "StudentArchCfg":
        if self.hidden_size and self.num_attention_heads and self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}")
        return self


# The default student: 4 layers, width 256 (8 heads of 32), FFN 768, sliced from the teacher. On the
# default data it keeps 98.7% of the teacher at 3.46x lower fp32 ONNX latency (benchmarks/distill_frontier).
DEFAULT_STUDENT_ARCH = {"num_hidden_layers": 4, "hidden_size": 256, "intermediate_size": 768}


class StudentCfg(Cfg):
    # DistilBERT-style: initialise a shallower student from chosen teacher layers, same width ...
    from_teacher_layers: Optional[list[int]] = Field(None, min_length=1)
    # ... or a student from a config. Exactly one of the two is set; neither means DEFAULT_STUDENT_ARCH.
    config: Optional[StudentArchCfg] = None

    @field_validator("from_teacher_layers")
    @classmethod
    def _distinct(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        if v is not None and (len(set(v)) != len(v) or any(i < 0 for i in v)):
            raise ValueError("layers must be distinct non-negative teacher layer indices")
        return v

    @model_validator(mode="before")
    @classmethod
    def _one_of(cls, data):
        if isinstance(data, dict) and data.get("config") is None and data.get("from_teacher_layers") is None:
            data = {**data, "config": DEFAULT_STUDENT_ARCH}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> "StudentCfg":
        if (self.from_teacher_layers is None) == (self.config is None):
            raise ValueError("set exactly one of student.from_teacher_layers or student.config")
        return self


class MatchCfg(Cfg):
    """One intermediate match teacher -> student (TextBrewer's intermediate_matches).

    Layer indices: hidden/attention count transformer layers from 0; for feature "hidden", layer -1 means the
    embedding output (so embedding matching is {feature: hidden, teacher_layer: -1, student_layer: -1})."""
    teacher_layer: int = Field(ge=-1)
    student_layer: int = Field(ge=-1)
    feature: Literal["hidden", "attention"]
    loss: Literal["mse", "kl", "cosine"] = "mse"
    weight: float = Field(1.0, ge=0)


# The KD loss's defaults, shared by distill, recovery after pruning/trimming, and QAT (which distils from fp32).
KD_ALPHA = 0.5
KD_TEMPERATURE = 2.0


class DistillCfg(Cfg):
    kind: Literal["distill"] = "distill"
    student: StudentCfg = StudentCfg()
    alpha: float = Field(KD_ALPHA, ge=0, le=1, description="weight of CE on labels; 1-alpha goes to the KD term")
    temperature: float = Field(KD_TEMPERATURE, gt=0)
    matches: list[MatchCfg] = Field(default_factory=list, description="intermediate-layer matches; empty = logit KD only")
    # "joint": all terms from the start; "two_phase": intermediate terms alone for intermediate_epochs, then logits.
    schedule: Literal["joint", "two_phase"] = "joint"
    intermediate_epochs: float = Field(1.0, gt=0)
    early_stopping_patience: Optional[int] = Field(None, ge=1, description="epochs without val-accuracy gain before stopping")
    # 2e-4: the sliced narrow default student reached 96.9% of the teacher at 1e-4 and 98.7% at 2e-4.
    train: TrainCfg = TrainCfg(epochs=2, learning_rate=2e-4, batch_size=32)


class PruneCfg(Cfg):
    """Unstructured pruning: weights set to zero, matrices keep their size (prune_structured cuts them)."""
    kind: Literal["prune"] = "prune"
    method: Literal["magnitude", "threshold", "taylor"] = "magnitude"
    scope: Literal["global", "per_layer"] = "global"
    sparsity: float = Field(0.3, ge=0, lt=1, description="fraction of encoder Linear weights set to zero")
    threshold: Optional[float] = Field(None, gt=0, description="method threshold: zero every |w| < threshold")
    schedule: Literal["one_shot", "gradual"] = "one_shot"
    steps: int = Field(1, ge=1, description="gradual: pruning steps, cubic sparsity ramp (Zhu & Gupta 2017)")
    calibration_batches: int = Field(8, ge=1, description="taylor: batches that accumulate |w * dL/dw|")
    recovery: Optional[TrainCfg] = Field(None, description="fine-tune under distillation from the teacher after pruning")

    @model_validator(mode="after")
    def _threshold_given(self) -> "PruneCfg":
        if (self.method == "threshold") != (self.threshold is not None):
            raise ValueError("method threshold needs threshold: <float>, and threshold is only valid with method threshold")
        return self


class StructuredPruneCfg(Cfg):
    """Heads and FFN neurons ranked by importance and cut out of the matrices (config updated, files smaller)."""
    kind: Literal["prune_structured"] = "prune_structured"
    heads_fraction: float = Field(0.0, ge=0, lt=1, description="fraction of all attention heads removed")
    ffn_fraction: float = Field(0.0, ge=0, lt=1, description="fraction of FFN intermediate neurons removed")
    min_heads_per_layer: int = Field(1, ge=1)
    importance: Literal["taylor", "magnitude"] = "taylor"
    calibration_batches: int = Field(8, ge=1)
    recovery: Optional[TrainCfg] = None


class VocabTrimCfg(Cfg):
    """Keep only tokens seen in the corpus (+ special tokens); remap the embedding table and ship a tokenizer
    that maps to the new ids (unseen tokens -> [UNK])."""
    kind: Literal["trim_vocab"] = "trim_vocab"
    corpus_splits: list[Literal["train", "validation", "test"]] = Field(["train"], min_length=1)
    min_count: int = Field(1, ge=1)
    # A word that needed a dropped piece is re-segmented or becomes [UNK]; a short KD fine-tune on the trimmed
    # ids teaches the model those new segmentations (the teacher keeps reading the full vocabulary).
    recovery: Optional[TrainCfg] = Field(None, description="fine-tune under distillation from the teacher after trimming")


StageCfg = Annotated[Union[DistillCfg, PruneCfg, StructuredPruneCfg, VocabTrimCfg], Field(discriminator="kind")]
STAGE_KINDS = ("distill", "prune", "prune_structured", "trim_vocab")


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


class BenchCfg(Cfg):
    threads: int = Field(1, ge=1)
    batch: int = Field(1, ge=1)
    seq_len: int = Field(128, ge=1)
    warmup_runs: int = Field(5, ge=0)
    runs: int = Field(50, ge=1)
    timeout_s: float = Field(600, gt=0)


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


class Recipe(Cfg):
    name: str = Field("default", pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="numpy and torch seeds must fit 32 bits")
    teacher: TeacherCfg = TeacherCfg()
    data: DataCfg = DataCfg()
    stages: list[StageCfg] = Field(default_factory=lambda: [DistillCfg(), PruneCfg()])
    quantize: QuantSpec = QuantSpec()
    export: ExportCfg = ExportCfg()
    bench: BenchCfg = BenchCfg()
    profile: str = "host"
    fit: Optional[FitCfg] = Field(None, description="search space of `edgecompress fit` (None: its defaults)")
    compute: ComputeCfg = Field(ComputeCfg(), description="device and precision of every training and model pass")

    @model_validator(mode="after")
    def _order(self) -> "Recipe":
        kinds = [s.kind for s in self.stages]
        if kinds.count("distill") > 1:
            raise ValueError("stages: distill appears twice; it builds a new student from the teacher, so the first "
                             "one's work would be thrown away: keep one distill stage")
        if "distill" in kinds and kinds.index("distill") != 0:
            raise ValueError("distill must be the first stage: it builds the student the other stages compress")
        if self.bench.seq_len > self.export.max_seq_len:
            raise ValueError(f"bench.seq_len {self.bench.seq_len} exceeds export.max_seq_len {self.export.max_seq_len}")
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
        raise UserInputError(first_error(e, source, " (see edgecompress/recipes/default.yaml)", STAGE_KINDS)) from None


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
