"""What a stage is given and what it gives back.

A stage is a function `(model, tokenizer, cfg, ctx, teacher) -> StageResult`: everything it needs comes in as an
argument and everything it makes (the model, the tokenizer the model reads, the metrics) comes back in the
result, so the caller decides what to save and a stage cannot leak state into the next one. The context is
frozen: it holds only the data every stage shares.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from edgecompress.compute import CPU, Placement
from edgecompress.data import Split, batches, encode
from edgecompress.recipe import KDLoss
from edgecompress.registry import STAGES


@dataclass(frozen=True)
class EmbeddingLoss:
    """task: embedding: what a student minimises against the teacher's pooled vectors for the same rows (labels are
    never used). mse is scaled by the width: on unit vectors per-coordinate errors are ~1/dim and would vanish beside
    the cosine term. On L2-normalised outputs dim * MSE is exactly 2 * (1 - cos), so mse, cosine and both differ
    there only in scale (both = 3 x cosine, a larger effective learning rate); they differ in direction only when
    the embedding is not normalised."""
    loss: str = "both"        # mse | cosine | both
    mse_weight: float = 1.0

    def __call__(self, student, teacher) -> tuple[Any, dict]:
        import torch.nn.functional as F
        s, t = student.float(), teacher.float()
        parts, total = {}, 0.0
        if self.loss in ("mse", "both"):
            mse = F.mse_loss(s, t) * s.shape[-1]
            total, parts["mse"] = total + self.mse_weight * mse, float(mse.detach())
        if self.loss in ("cosine", "both"):
            cos = (1 - F.cosine_similarity(s, t, dim=-1)).mean()
            total, parts["cosine"] = total + cos, float(cos.detach())
        return total, parts


@dataclass(frozen=True)
class StageContext:
    """The data side shared by every stage of a run, and where its models run; stages read it, never write it."""
    splits: dict[str, Split]
    max_seq_len: int
    seed: int = 0
    placement: Placement = CPU  # device + precision of every model-over-data pass (compute.py)
    kd: KDLoss = KDLoss()  # the recipe's KD loss (Recipe.kd): recovery trains on what distillation used
    embedding: Optional[EmbeddingLoss] = None  # task: embedding (the model outputs vectors); None: class logits
    embedding_dim: Optional[int] = None  # embedding.dim: students output this many dims; targets go through the map
    # Token ids per (tokenizer, split, subset): a split is tokenized once per run, not once per epoch and pass. The
    # entry keeps its tokenizer alive, so the id() in the key cannot be reused by another tokenizer.
    _encoded: dict = field(default_factory=dict, repr=False, compare=False)
    _teacher_out: dict = field(default_factory=dict, repr=False, compare=False)  # (split, subset) -> teacher outputs
    # embedding.dim's map, fitted once. A copy made with dataclasses.replace shares this dict (distill's augmented
    # context resets only the two caches above), so every copy reads the map of the run's own train split.
    _target_map: dict = field(default_factory=dict, repr=False, compare=False)

    def batches(self, tokenizer, split: str, batch_size: int, *, shuffle: bool, epoch: int = 0,
                subset: Optional[int] = None):
        """(inputs, labels, row_index) batches of a split tokenized with `tokenizer`. The tokenizer is an argument
        because after vocabulary trimming the student and the teacher read different ids; the row index is the same
        for both, which is what links a student batch to the teacher's logits for those rows."""
        s = self.splits[split].subset(subset, self.seed)
        key = (id(tokenizer), split, subset)
        if key not in self._encoded:
            self._encoded[key] = (tokenizer, encode(tokenizer, s, self.max_seq_len))
        return batches(tokenizer, s, batch_size, self.max_seq_len, shuffle=shuffle, seed=self.seed + epoch,
                       encoded=self._encoded[key][1])

    def eval_batches(self, tokenizer, split: str, subset: Optional[int] = None):
        """Batches for a pass without gradients (accuracy, teacher logits): larger on an accelerator."""
        return self.batches(tokenizer, split, self.placement.eval_batch, shuffle=False, subset=subset)


    def teacher_outputs(self, teacher: "Teacher", split: str, subset: Optional[int] = None):
        """The teacher's outputs (logits or vectors) for a split's rows, in row order, computed once per run."""
        key = (split, subset)
        if key not in self._teacher_out:
            from edgecompress.compress.train import predict_logits
            self._teacher_out[key] = predict_logits(teacher.model, self.eval_batches(teacher.tokenizer, split, subset),
                                                    self.placement)
        return self._teacher_out[key]

    # -- embedding.dim: the one place that knows the targets are the teacher's vectors through a fixed map ----------
    def target_map(self, teacher: "Teacher"):
        """[dim, teacher width]: PCA (retrieval.pca_map) of the teacher's outputs on the whole train split, as the
        teacher emits them (L2-normalised for a normalising teacher: those unit vectors are what the map is applied
        to, and their dot products are the cosines retrieval ranks by). Distill initialises the student's projection
        from it, so training starts from the PCA solution."""
        if "map" not in self._target_map:
            from edgecompress.retrieval import pca_map
            self._target_map["map"] = pca_map(self.teacher_outputs(teacher, "train"), self.embedding_dim)
        return self._target_map["map"]

    def to_target(self, teacher: "Teacher", vectors):
        """Teacher vectors (numpy or a torch tensor, [rows, width]) as the student's targets: unchanged, or with
        embedding.dim through the fixed map and re-normalised where the teacher normalises, so the loss and the
        cosines compare equal widths."""
        if self.embedding_dim is None:
            return vectors
        normalize = bool(getattr(teacher.model.config, "embedding_normalize", False))
        if not hasattr(vectors, "detach"):
            from edgecompress.retrieval import project
            return project(vectors, self.target_map(teacher), normalize)
        import torch
        import torch.nn.functional as F
        w = torch.as_tensor(self.target_map(teacher), device=vectors.device)
        out = vectors.float() @ w.T
        return F.normalize(out, p=2.0, dim=-1) if normalize else out

    def teacher_targets(self, teacher: "Teacher", split: str, subset: Optional[int] = None):
        """What a student's outputs are trained and judged against on a split: teacher_outputs through to_target
        (computed once per run)."""
        if self.embedding_dim is None:
            return self.teacher_outputs(teacher, split, subset)
        key = ("target", split, subset)
        if key not in self._teacher_out:
            self._teacher_out[key] = self.to_target(teacher, self.teacher_outputs(teacher, split, subset))
        return self._teacher_out[key]


@dataclass(frozen=True)
class Teacher:
    """The model the stages distil from, with its own tokenizer (anything fed to the teacher must use it)."""
    model: Any
    tokenizer: Any


@dataclass
class StageResult:
    model: Any
    tokenizer: Any                                  # saved beside the model: a stage may change the ids
    metrics: dict = field(default_factory=dict)     # what the stage measured; lands in the artifact's metrics.json


@dataclass(frozen=True)
class Stage:
    """A registered stage: its function plus what the caller must know before calling it.

    starts_from_teacher: the stage builds its model from the teacher's (distillation makes a new, smaller model
    out of the teacher), so the caller passes the teacher's model and tokenizer as the input, not its parent's."""
    name: str
    run: Callable[..., StageResult]
    starts_from_teacher: bool = False

    def __call__(self, model, tokenizer, cfg, ctx: StageContext, teacher: Optional[Teacher] = None) -> StageResult:
        return self.run(model, tokenizer, cfg, ctx, teacher)


def register_stage(name: str):
    """Register the decorated function as the implementation of the declared stage `name` (its row in STAGES says
    what the caller must know, e.g. starts_from_teacher); the function itself is returned unchanged."""
    def deco(fn: Callable[..., StageResult]) -> Callable[..., StageResult]:
        STAGES.register(name)(Stage(name, fn, STAGES.row(name).starts_from_teacher))
        return fn
    return deco
