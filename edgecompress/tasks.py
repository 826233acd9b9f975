"""Tasks: what a run trains the student to do, one row each. What is task-specific (the model head a folder is
loaded with, how the teacher is evaluated, whether the data needs labels, the metric the report leads with) lives in
the task's module, so a second task (sentence embeddings, token classification) is a row and a module, not a fork of
the pipeline.

The row is torch-free (the recipe schema and `plan` read it); the module is imported on first use.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

from edgecompress.registry import TASKS


@dataclass(frozen=True)
class TaskSpec:
    name: str
    module: str          # registers the task's implementation (load_teacher, load_artifact_model, evaluate)
    needs_labels: bool   # the data must carry a label column
    metric: str          # the metric verify reports and the report ranks by
    verifier: str = "edgecompress.verification:verify_file"  # module:function of the verify step (steps.py)


def declare_task(spec: TaskSpec) -> TaskSpec:
    return TASKS.declare(spec)


declare_task(TaskSpec("classification", "edgecompress.classification", needs_labels=True, metric="test_accuracy"))
# Sentence embeddings: pooling + L2 norm in the graph, distilled with MSE/cosine on the pooled vector; labels (where the
# data has them) only feed the kNN probes of verify, never the loss.
declare_task(TaskSpec("embedding", "edgecompress.embedding", needs_labels=False, metric="recall_at_10",
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
