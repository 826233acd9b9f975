"""Tasks: what a run trains the student to do, one row each. What is task-specific (the model head a folder is
loaded with, how the teacher is evaluated, whether the data needs labels, the metric the report leads with) lives in
the task's module, so a second task (sentence embeddings, token classification) is a row and a module, not a fork of
the pipeline.

The row is torch-free (the recipe schema and `plan` read it); the module is imported on first use.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

from pydantic import AfterValidator

from edgecompress.registry import TASKS


@dataclass(frozen=True)
class Score:
    """How students of a task are compared (fit ranks and selects on `val`, reports the task's `metric` of the final
    file) and how a sentence names the comparison. Selection reads the validation split only: choosing on test
    would make the test number reported for the choice optimistic."""
    val: str                # a torch student's validation score, as the compressing stages' metrics carry it
    name: str               # how a verdict names the file's metric
    teacher: Optional[str]  # the teacher artifact's metric the file's is a share of; None: the teacher is its own
    of_teacher: str         # reference (1.0 by definition), e.g. recall of its own neighbours
    best: str               # "the winner is the <best> on the validation split"
    worse: str              # a trained candidate that lost: "<worse> on validation (a < b)"
    same: str               # one that tied: "<same> (a); the winner ranked higher by ..."


@dataclass(frozen=True)
class TaskSpec:
    name: str
    module: str          # registers the task's implementation (load_teacher, load_artifact_model, evaluate)
    needs_labels: bool   # the data must carry a label column
    metric: str          # the metric verify reports and the report ranks by
    score: Score         # how fit compares this task's students
    # The student's output is distilled onto the teacher's element by element (an embedding's vector), so a student
    # must keep the teacher's width: fit searches depth, FFN, vocabulary and format at that width.
    keeps_teacher_width: bool = False
    verifier: str = "edgecompress.verification:verify_file"  # module:function of the verify step (steps.py)


def declare_task(spec: TaskSpec) -> TaskSpec:
    return TASKS.declare(spec)


declare_task(TaskSpec("classification", "edgecompress.classification", needs_labels=True, metric="test_accuracy",
                      score=Score("val_accuracy", "test accuracy", "test_accuracy", "of the teacher",
                                  best="most accurate", worse="less accurate", same="as accurate")))
# Sentence embeddings: pooling + L2 norm in the graph, distilled with MSE/cosine on the pooled vector; labels (where the
# data has them) only feed the kNN probes of verify, never the loss. Students are compared by recall@10 (what a search
# over the vectors returns) rather than by mean cosine to the teacher: the average can rank them the other way (two
# tiny-embedder students: cosine 0.9991 vs 0.9990 on validation, recall@10 0.881 vs 0.909).
declare_task(TaskSpec("embedding", "edgecompress.embedding", needs_labels=False, metric="recall_at_10",
                      score=Score("val_recall_at_10", "recall@10", None, "of the teacher's neighbours",
                                  best="one that finds the most of the teacher's neighbours (recall@10)",
                                  worse="fewer of the teacher's neighbours",
                                  same="as many of the teacher's neighbours"),
                      keeps_teacher_width=True,
                      verifier="edgecompress.verification:verify_embedding_file"))


def _known_task(v: str) -> str:
    if v not in TASKS.names():
        raise ValueError(f"unknown task {v!r}; known: {', '.join(TASKS.names())}")
    return v


Task = Annotated[str, AfterValidator(_known_task)]


def task_row(recipe) -> TaskSpec:
    return TASKS.row(recipe.task)


def task_of(recipe):
    """The implementation of the recipe's task."""
    return TASKS.get(recipe.task)
