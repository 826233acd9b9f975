"""What each kind of graph node builds: the teacher, a compression stage, an export (+ bundle), its verification, its
benchmark. A `Session` holds what the builders share during one run (the plan, the data context, the loaded teacher)
and executes a node through the engine after its parents.

A builder returns a function that writes the node's files into the folder it is given; the engine decides whether
to call it (a finished step is reused) and where the result lands.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edgecompress import progress
from edgecompress.artifact import Artifact
from edgecompress.data import batches
from edgecompress.engine import Build, Engine
from edgecompress.errors import RuntimeFailure
from edgecompress.formats import FORMATS
from edgecompress.graph import E2E_TEXTS, Step, quant_for
from edgecompress.tasks import task_of, task_row


def json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def write_metrics(tmp: Path, metrics: dict) -> None:
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=json_default))


def save_model(model, tokenizer, path: Path) -> None:
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))


def load_artifact_tokenizer(art: Artifact):
    # Each model artifact carries its own tokenizer: vocabulary trimming changes the ids downstream of it.
    from edgecompress.modeling import load_tokenizer
    return load_tokenizer(art.path / "model")


class Session:
    """One run over a plan's graph: nodes are executed on demand, parents first, each at most once."""

    def __init__(self, plan, engine: Engine, rebench: bool = False):
        from edgecompress.compress.base import EmbeddingLoss, StageContext
        self.plan, self.engine, self.rebench = plan, engine, rebench
        self.recipe = plan.recipe
        self.task, self.task_row = task_of(self.recipe), task_row(self.recipe)
        self.splits = plan.splits
        self.placement = plan.placement  # where every training and model pass runs (compute.py)
        e = self.recipe.embedding_cfg
        self.ctx = StageContext(self.splits, self.recipe.data.max_seq_len, self.recipe.seed, plan.placement,
                                kd=self.recipe.kd, embedding=EmbeddingLoss(e.loss, e.mse_weight)
                                if self.recipe.task == "embedding" else None, embedding_dim=e.dim)
        self.artifacts: dict[str, Artifact] = {}
        self._teacher = None

    def artifact(self, label: str) -> Artifact:
        """The artifact of graph node `label`, its parents first (reused from the store where they exist)."""
        if label not in self.artifacts:
            node = self.plan.graph[label]
            for parent in node.parents:
                self.artifact(parent)
            build = builder(node.step)(self, node)
            force = self.rebench and node.step == "bench"  # measurements are of this machine now
            self.artifacts[label] = self.engine.execute(node, build, force=force)
        return self.artifacts[label]

    def load_model(self, art: Artifact):
        return self.task.load_artifact_model(art.path / "model")

    def teacher(self):
        """The teacher model and tokenizer the stages distil from, loaded once."""
        if self._teacher is None:
            from edgecompress.compress.base import Teacher
            art = self.artifact("teacher")
            self._teacher = Teacher(self.load_model(art), load_artifact_tokenizer(art))
        return self._teacher

    def calib_data(self, quant, tokenizer):
        """Calibration rows, streamed, not listed: static int8 takes calibration.samples rows, QAT its train rows,
        fallback labelled validation rows (quant/calibration.py). Without a quant intent 64 rows feed the observers."""
        from edgecompress.export.quant.calibration import CalibData
        r, splits = self.recipe, self.splits
        q = quant or r.quantize
        n_cal = q.calibration.samples if q.activations == "static" else 64

        def rows(split: str, bs: int, shuffle: bool, n=None):
            return batches(tokenizer, splits[split].subset(n, r.seed), bs, r.data.max_seq_len, shuffle=shuffle,
                           seed=r.seed)
        return CalibData(
            inputs=lambda: (b[0] for b in rows("train", q.calibration.batch_size, True, n_cal)),
            train=(lambda: rows("train", q.qat.batch_size, True, q.qat.max_train_samples)) if q.qat else None,
            validation=lambda: [(b[0], b[1]) for b in rows("validation", 32, False)], kd=r.kd,
            placement=self.placement)

    def quant_for(self, precision: str):
        return quant_for(self.recipe, self.plan.profile, precision)


# -- builders: (session, node) -> a function that writes the node's files ------------------------------------------
def build_teacher(s: Session, node: Step) -> Build:
    r = s.recipe

    def build(tmp: Path) -> None:
        import torch
        from edgecompress.modeling import load_tokenizer
        progress.log(f"[{node.label}] on {s.placement}")
        torch.manual_seed(r.seed)
        model = s.task.load_teacher(s.plan.teacher_dir, s.plan.teacher_head)
        tokenizer = load_tokenizer(s.plan.teacher_dir)
        if r.teacher.finetune is not None:
            from edgecompress.compress.finetune import finetune
            res = finetune(model, tokenizer, r.teacher.finetune, s.ctx)
            model, tokenizer, metrics = res.model, res.tokenizer, res.metrics
        else:
            metrics = s.task.evaluate(model, s.ctx.eval_batches(tokenizer, "test"), s.placement)
        save_model(model, tokenizer, tmp / "model")
        write_metrics(tmp, {**metrics, **s.placement.record()})
    return build


def build_stage(s: Session, node: Step) -> Build:
    """One recipe stage. Its model and tokenizer are its parent artifact's, or the teacher's when the stage's row
    declares starts_from_teacher (distillation builds a new model out of the teacher)."""
    from edgecompress.registry import STAGES
    cfg, index = node.spec, node.config["index"]
    stage = STAGES.get(cfg.kind)

    def build(tmp: Path) -> None:
        import torch
        progress.log(f"[{node.label}] on {s.placement}")
        torch.manual_seed(s.recipe.seed + index)
        teacher = s.teacher()
        parent = s.artifacts[node.parents[0]]
        model = teacher.model if stage.starts_from_teacher else s.load_model(parent)
        res = stage(model, load_artifact_tokenizer(parent), cfg, s.ctx, teacher)
        save_model(res.model, res.tokenizer, tmp / "model")
        write_metrics(tmp, {**res.metrics, **s.placement.record()})
    return build


def build_export(s: Session, node: Step) -> Build:
    from edgecompress.bundle import write_bundle
    from edgecompress.export.iospec import IOSpec, file_mb, read_io_beside
    from edgecompress.registry import EXPORTERS
    from edgecompress.verification import write_expected
    r = s.recipe
    fmt, precision, quant = node.spec
    spec = FORMATS[fmt]
    parent = s.artifacts[node.parents[0]]

    def build(tmp: Path) -> None:
        import torch
        torch.manual_seed(r.seed)
        model, tokenizer = s.load_model(parent), load_artifact_tokenizer(parent)
        exporter = EXPORTERS.get(fmt)(batch=r.bench.batch)
        io = IOSpec.for_model(model, tokenizer, r.export.max_seq_len, **s.task.io_fields(model))
        t0 = time.perf_counter()
        with progress.status(f"exporting {node.label}"):
            res = exporter.export(model, io, quant, s.calib_data(quant, tokenizer), tmp)
        export_s = time.perf_counter() - t0
        io = read_io_beside(res.file)  # the exporter's own io.json (tflite adds its static shape)
        infer = exporter.load(res.file, threads=r.bench.threads)
        expected = write_expected(tmp, io, infer, model, r.bench.batch if spec.fixed_batch else 1, r.seed,
                                  exact=precision == "fp32")
        write_bundle(tmp, tokenizer, node.config["labels"], io, fmt, precision)  # what an app needs beside the model
        write_metrics(tmp, {"format": fmt, "precision": precision, "file": res.file.name,
                            "file_mb": file_mb(res.file), "export_seconds": round(export_s, 2),
                            "notes": res.notes, "details": res.details, "runtime": spec.runtime, **expected})
    return build


def build_verify(s: Session, node: Step) -> Build:
    import importlib
    from edgecompress.export.iospec import read_io_beside
    from edgecompress.registry import EXPORTERS
    r = s.recipe
    exp, parent = (s.artifacts[p] for p in node.parents)
    module, _, fn = s.task_row.verifier.partition(":")
    verify_file = getattr(importlib.import_module(module), fn)

    def build(tmp: Path) -> None:
        model, tokenizer = s.load_model(parent), load_artifact_tokenizer(parent)
        file = exp.checked(exp.metrics["file"])
        infer = EXPORTERS.get(exp.metrics["format"])().load(file, threads=r.bench.threads)
        test = s.splits["test"].subset(r.export.max_test_samples, r.seed)
        # The teacher's outputs for the same rows, computed only by a task that judges against them (embedding).
        # target: the same through embedding.dim's map (what a projected student is compared with at equal width).
        reference = lambda: s.ctx.teacher_outputs(s.teacher(), "test", r.export.max_test_samples)  # noqa: E731
        target = lambda: s.ctx.teacher_targets(s.teacher(), "test", r.export.max_test_samples)  # noqa: E731
        with progress.status(f"verifying {node.job}"):
            metrics = verify_file(infer, read_io_beside(file), model, tokenizer, test,
                                  shapes=r.export.parity_shapes, seed=r.seed, reference=reference, target=target)
        write_metrics(tmp, metrics)
    return build


def build_bench(s: Session, node: Step) -> Build:
    from edgecompress.bench.harness import bench_file
    exp = s.artifacts[node.parents[0]]

    def build(tmp: Path) -> None:
        m = exp.metrics
        texts = s.splits["test"].subset(E2E_TEXTS, s.recipe.seed).texts  # a fixed sample of real sentences
        with tempfile.TemporaryDirectory(prefix="edgecompress-texts-") as d:
            (Path(d) / "texts.json").write_text(json.dumps(texts))
            res = bench_file(exp.checked(m["file"]), exp.checked("io.json"), m["runtime"], s.recipe.bench,
                             expected_json=exp.checked("expected.json", missing_ok=True), runner=node.config["runner"],
                             tokenizer_json=exp.checked("tokenizer.json", missing_ok=True),
                             texts_json=Path(d) / "texts.json")
        if not res.get("ok", False):
            raise RuntimeFailure(f"benchmark of {node.job} failed: {res.get('error', 'no result')}")
        write_metrics(tmp, res)
    return build


_BUILDERS: dict[str, Callable[[Session, Step], Build]] = {
    "teacher": build_teacher, "export": build_export, "verify": build_verify, "bench": build_bench}


def builder(step: str) -> Callable[[Session, Step], Build]:
    """The builder of a node kind; every other kind is a compression stage (registry.STAGES)."""
    return _BUILDERS.get(step, build_stage)
