"""The stage configs: what each compression stage of a recipe takes, as data.

Each stage config class is the stage's row in registry.STAGES (`@stage(module, ...)` declares it; the class's `kind`
is the stage's name in recipes): a new stage is one class here and its module in compress/. Torch-free, like every
schema, so validating a recipe never imports torch.
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BeforeValidator, Field, SerializeAsAny, field_validator, model_validator

from edgecompress.config import Cfg
from edgecompress.registry import parse_stage, stage


class TrainCfg(Cfg):
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, ge=1)
    max_train_samples: Optional[int] = Field(None, ge=1, description="None = the whole train split")
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    # A length in epochs gives a small train split few updates (3,000 rows at batch 32: 94 an epoch); min_steps adds
    # epochs (the last one fractional) until the run has made at least this many optimizer steps.
    min_steps: Optional[int] = Field(None, ge=1, description="train at least this many optimizer steps")


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


# The default student: 4 layers, width 256 (8 heads of 32), FFN 512, sliced from the teacher. With a trimmed
# vocabulary it kept 98.4% of the teacher as .pte at p50 3.1 ms (FFN 768: 98.5% at 3.5 ms; benchmarks/fit).
DEFAULT_STUDENT_ARCH = {"num_hidden_layers": 4, "hidden_size": 256, "intermediate_size": 512}
DEFAULT_STUDENT_VOCAB_UNSEEN = 0.045  # the default recipe's student table (StudentVocabCfg.max_unseen)


class StudentVocabCfg(Cfg):
    """Which of the train split's tokens the student's table keeps: the most frequent ones, seen at least min_count
    times, at most max_tokens, and with max_unseen as few as leave at most that share of the validation split's
    tokens outside the table (a token outside it is re-segmented into kept pieces or [UNK]; the teacher's embedding
    row that knew the word is gone). A train split too small to cover the validation text that well keeps the
    teacher's whole vocabulary, and the stage says so: 3,000 VADER rows leave 5.8% of the validation tokens out even
    whole, and a student trimmed to them kept 96.5% of the teacher where one with the whole table kept 98.4%; the
    full 12,677 rows reach 4.5% with 9,217 tokens."""
    min_count: int = Field(1, ge=1, description="keep tokens seen at least this often")
    max_tokens: Optional[int] = Field(None, ge=1, description="at most this many, the most frequent; None: no cap")
    max_unseen: Optional[float] = Field(None, gt=0, lt=1, description="share of validation tokens the table may miss")


class StudentCfg(Cfg):
    # DistilBERT-style: initialise a shallower student from chosen teacher layers, same width ...
    from_teacher_layers: Optional[list[int]] = Field(None, min_length=1)
    # ... or a student from a config. Exactly one of the two is set; neither means DEFAULT_STUDENT_ARCH.
    config: Optional[StudentArchCfg] = None
    # The student reads a vocabulary trimmed to the train split's tokens from its first step, so distillation
    # itself teaches it the new segmentations: no recovery pass. None: the teacher's whole vocabulary.
    vocab: Optional[StudentVocabCfg] = None

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


class KDLoss(Cfg):
    """The KD loss's weights. The distill stage's are the recipe's: recovery after pruning or trimming and QAT train
    on the same loss the student was distilled with (a recipe without a distill stage uses the defaults)."""
    alpha: float = Field(KD_ALPHA, ge=0, le=1)
    temperature: float = Field(KD_TEMPERATURE, gt=0)


class StageConfig(Cfg):
    """What every stage config has: its kind (the name of its row in registry.STAGES)."""
    kind: str


class AugmentCfg(Cfg):
    """Distillation on small data (TinyBERT's data augmentation; Tang et al. 2019): the train split grows to `rows`
    with variants of its texts, each word masked (mask_prob) or swapped for a random word of the corpus
    (replace_prob). The teacher labels the variants, so they count only in the KD term; the labels' CE term sees the
    original rows. A train split of `rows` or more is left as it is."""
    rows: int = Field(12000, ge=1, description="augment the train split up to this many rows")
    mask_prob: float = Field(0.1, ge=0, le=1, description="per word: replaced by the tokenizer's mask token")
    replace_prob: float = Field(0.1, ge=0, le=1, description="per word: replaced by a random word of the corpus")

    @model_validator(mode="after")
    def _changes_something(self) -> "AugmentCfg":
        if self.mask_prob + self.replace_prob <= 0 or self.mask_prob + self.replace_prob > 1:
            raise ValueError("mask_prob + replace_prob must be in (0, 1]: it is the chance a word changes")
        return self


@stage("edgecompress.compress.distill", starts_from_teacher=True)
class DistillCfg(StageConfig):
    kind: Literal["distill"] = "distill"
    student: StudentCfg = StudentCfg()
    alpha: float = Field(KD_ALPHA, ge=0, le=1, description="weight of CE on labels; 1-alpha goes to the KD term")
    temperature: float = Field(KD_TEMPERATURE, gt=0)
    matches: list[MatchCfg] = Field(default_factory=list, description="intermediate-layer matches; empty = logit KD only")
    # "joint": all terms from the start; "two_phase": intermediate terms alone for intermediate_epochs, then logits.
    schedule: Literal["joint", "two_phase"] = "joint"
    intermediate_epochs: float = Field(1.0, gt=0)
    early_stopping_patience: Optional[int] = Field(None, ge=1, description="epochs without val-accuracy gain before stopping")
    augment: Optional[AugmentCfg] = Field(None, description="grow a small train split with teacher-labelled variants")
    # 2e-4: the sliced narrow default student reached 96.9% of the teacher at 1e-4 and 98.7% at 2e-4.
    train: TrainCfg = TrainCfg(epochs=2, learning_rate=2e-4, batch_size=32)

    @model_validator(mode="after")
    def _same_ids_for_matches(self) -> "DistillCfg":
        if self.student.vocab is not None and self.matches:
            raise ValueError("student.vocab gives the student other token ids than the teacher's, and "
                             "intermediate matches compare them token by token; drop one of the two")
        return self


@stage("edgecompress.compress.prune")
class PruneCfg(StageConfig):
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


@stage("edgecompress.compress.structured")
class StructuredPruneCfg(StageConfig):
    """Heads and FFN neurons ranked by importance and cut out of the matrices (config updated, files smaller)."""
    kind: Literal["prune_structured"] = "prune_structured"
    heads_fraction: float = Field(0.0, ge=0, lt=1, description="fraction of all attention heads removed")
    ffn_fraction: float = Field(0.0, ge=0, lt=1, description="fraction of FFN intermediate neurons removed")
    min_heads_per_layer: int = Field(1, ge=1)
    importance: Literal["taylor", "magnitude"] = "taylor"
    calibration_batches: int = Field(8, ge=1)
    recovery: Optional[TrainCfg] = None


@stage("edgecompress.compress.vocab")
class VocabTrimCfg(StageConfig):
    """Keep only tokens seen in the corpus (+ special tokens); remap the embedding table and ship a tokenizer
    that maps to the new ids (unseen tokens -> [UNK])."""
    kind: Literal["trim_vocab"] = "trim_vocab"
    corpus_splits: list[Literal["train", "validation", "test"]] = Field(["train"], min_length=1)
    min_count: int = Field(1, ge=1)
    # A word that needed a dropped piece is re-segmented or becomes [UNK]; a short KD fine-tune on the trimmed
    # ids teaches the model those new segmentations (the teacher keeps reading the full vocabulary).
    recovery: Optional[TrainCfg] = Field(None, description="fine-tune under distillation from the teacher after trimming")


# A recipe stage: validated as the config class of its kind's row, so a stage declared anywhere (before the recipe
# is read) is accepted without an edit here; SerializeAsAny dumps the kind's own fields.
StageCfg = Annotated[SerializeAsAny[StageConfig], BeforeValidator(parse_stage)]
