"""The classification task: a *ForSequenceClassification model, labels from the data, accuracy as the metric."""
from __future__ import annotations

from pathlib import Path

from edgecompress.registry import TASKS


@TASKS.register("classification")
class Classification:
    @staticmethod
    def load_teacher(path: Path, num_labels: int):  # num_labels: the plan's teacher_head
        """A *ForSequenceClassification from a local folder; a headless encoder gets a fresh head."""
        from edgecompress.modeling import load_classifier
        return load_classifier(path, num_labels)

    @staticmethod
    def load_artifact_model(path: Path):
        """A model a step saved (its head is already trained)."""
        from transformers import AutoModelForSequenceClassification
        return AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True,
                                                                  use_safetensors=True).eval()

    @staticmethod
    def evaluate(model, batches, placement) -> dict:
        """The teacher's own test metrics when it is used as it is (no fine-tune)."""
        from edgecompress.compress.train import accuracy
        return {"test_accuracy": accuracy(model, batches, placement)}

    @staticmethod
    def io_fields(model) -> dict:
        """io.json's output: the head's logits (IOSpec's defaults)."""
        return {}
