"""Runs a plan: teacher -> compress chain -> export fan-out (+ parity/accuracy in each runtime) -> bench -> report.

Every step is an artifact in the content-addressed store ($EDGECOMPRESS_HOME/store, default
~/.cache/edgecompress/store), so a finished step is never recomputed and a killed run resumes; the run
folder (<out>/<recipe name>/) links to the artifacts it used and holds the report.
"""
from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from edgecompress import progress
from edgecompress.artifact import Artifact, Store, artifact_id, sha256_file
from edgecompress.data import batches
from edgecompress.errors import EdgeCompressError, RuntimeFailure, UserInputError
from edgecompress.formats import FORMATS
from edgecompress.plan import Plan, make_plan
from edgecompress.recipe import Recipe, load_recipe


E2E_TEXTS = 64  # test sentences timed text -> label beside the model-only latency


def export_config(r: Recipe, fmt: str, precision: str, quant, labels: list[str]) -> dict:
    """What the exported file depends on, and nothing else: the verification and bench settings are their own
    steps' configs, so changing them never re-exports (or re-lowers a .pte)."""
    from edgecompress.registry import EXPORTERS
    cfg = {"format": fmt, "precision": precision, "quantize": quant.model_dump() if quant else None,
           "max_seq_len": r.export.max_seq_len, "seed": r.seed, "labels": list(labels),
           "exporter_revision": EXPORTERS.get(fmt).revision}
    if FORMATS[fmt].fixed_batch:  # the file bakes in the largest batch it accepts
        cfg["batch"] = r.bench.batch
    return cfg


def verify_config(r: Recipe, data_id: str) -> dict:
    return {"parity_shapes": [list(s) for s in r.export.parity_shapes], "max_test_samples": r.export.max_test_samples,
            "threads": r.bench.threads, "seed": r.seed, "data": data_id}


def bench_config(r: Recipe, runner: str) -> dict:
    return {"bench": r.bench.model_dump(), "profile": r.profile, "target": "local", "runner": runner}


def home() -> Path:
    return Path(os.environ.get("EDGECOMPRESS_HOME", Path.home() / ".cache" / "edgecompress"))


def _teacher_identity(teacher_dir: Path) -> dict:
    return {"weights_sha256": sha256_file(teacher_dir / "model.safetensors")[:16],
            "config": json.loads((teacher_dir / "config.json").read_text())}


def _save_model(model, tokenizer, path: Path) -> None:
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))


def load_artifact_model(art: Artifact):
    from transformers import AutoModelForSequenceClassification
    return AutoModelForSequenceClassification.from_pretrained(str(art.path / "model"), local_files_only=True,
                                                              use_safetensors=True).eval()


def load_artifact_tokenizer(art: Artifact):
    # Each model artifact carries its own tokenizer: vocabulary trimming changes the ids downstream of it.
    from edgecompress.modeling import load_tokenizer
    return load_tokenizer(art.path / "model")


def _write_metrics(tmp: Path, metrics: dict) -> None:
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))


def _check_folder(folder: Path, what: str) -> None:
    """A folder the run will write into: refused before any work when it cannot be one."""
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                raise UserInputError(f"{what} {folder}: {p} is a file, not a folder; point {what} at a folder")
            if not os.access(p, os.W_OK):
                raise UserInputError(f"{what} {folder}: {p} is not writable; point {what} at a writable folder")
            return


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


class Runner:
    def __init__(self, plan: Plan, run_dir: Path, rebench: bool = False, debug: bool = False):
        self.plan = plan
        self.debug = debug
        self.rebench = rebench  # measurements are of this machine now: CI wants fresh ones, not cached ones
        self.recipe: Recipe = plan.recipe
        self.store = Store(home() / "store")
        self.run_dir = run_dir
        self.lineage: list[dict] = []

    # -- helpers -------------------------------------------------------------------------------------------
    def step(self, step: str, config: dict, parents: list[str], build: Callable[[Path], None],
              label: Optional[str] = None, force: bool = False) -> Artifact:
        aid = artifact_id(step, config, parents)
        art = None if force else self.store.get(step, aid)
        # Multi-process (accelerate launch / torchrun): rank 0 decides and is the only writer of the store and the
        # run folder. Training steps run on every rank (their gradients are all-reduced), rank > 0 building into a
        # throw-away folder; export/bench run on rank 0 alone (a second copy would skew the latency).
        from edgecompress.compress.train import process_group
        dist = process_group()
        if dist is not None:
            flag = [art is not None]
            dist.broadcast_object_list(flag, src=0)
            if dist.get_rank() != 0:
                if not flag[0]:
                    if step not in ("export", "bench"):
                        import tempfile
                        with tempfile.TemporaryDirectory() as tmp:
                            build(Path(tmp))
                    dist.barrier()
                art = self.store.get(step, aid)
                if art is None:
                    raise RuntimeFailure(f"{step}: rank {dist.get_rank()} cannot see artifact {aid} written by rank 0; "
                                         "every rank needs the same EDGECOMPRESS_HOME (a shared file system across nodes)")
                self._record(label or step, step, art, parents)
                return art
        if art is None:
            with self.store.lock(step, aid):  # a concurrent run of the same step waits here, then reuses it
                art = None if force else self.store.get(step, aid)
                if art is None:
                    art = self._build(step, aid, config, parents, build, label or step)
            if dist is not None:
                dist.barrier()
        else:
            progress.log(f"[{label or step}] reusing {art.path.name}")
        self._record(label or step, step, art, parents)
        link = self.run_dir / "artifacts" / (label or step)
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp_link = link.with_name(f".{link.name}.{os.getpid()}")  # replaced atomically: concurrent runs may race here
        tmp_link.unlink(missing_ok=True)
        tmp_link.symlink_to(art.path, target_is_directory=True)
        os.replace(tmp_link, link)
        return art

    def _build(self, step: str, aid: str, config: dict, parents: list[str], build: Callable[[Path], None],
               label: str) -> Artifact:
        progress.log(f"[{label}] running")
        t0 = time.perf_counter()
        with self.store.create(step, aid, config, parents) as tmp:
            build(tmp)
        art = self.store.get(step, aid)
        if art is None:
            raise RuntimeFailure(f"{step}: artifact {aid} vanished right after it was written; check the disk")
        progress.log(f"[{label}] done in {time.perf_counter() - t0:.1f} s -> {art.path}")
        return art

    def _record(self, label: str, step: str, art: Artifact, parents: list[str]) -> None:
        self.lineage.append({"label": label, "step": step, "id": art.id, "parents": parents,
                             "path": str(art.path), "duration_s": art.manifest.get("duration_s")})

    # -- steps ---------------------------------------------------------------------------------------------
    def teacher(self, ctx) -> Artifact:
        from edgecompress.modeling import load_classifier
        r = self.recipe
        config = {"source": _teacher_identity(self.plan.teacher_dir), "finetune": r.teacher.finetune,
                  "data": self._data_id, "num_labels": self.plan.num_labels, "seed": r.seed,
                  "max_seq_len": r.data.max_seq_len, **ctx.placement.id_part()}

        def build(tmp: Path) -> None:
            import torch
            from edgecompress.modeling import load_tokenizer
            progress.log(f"[teacher] on {ctx.placement}")
            torch.manual_seed(r.seed)
            model = load_classifier(self.plan.teacher_dir, self.plan.num_labels)
            tokenizer = load_tokenizer(self.plan.teacher_dir)
            if r.teacher.finetune is not None:
                from edgecompress.compress.finetune import finetune
                res = finetune(model, tokenizer, r.teacher.finetune, ctx)
                model, tokenizer, metrics = res.model, res.tokenizer, res.metrics
            else:
                from edgecompress.compress.train import accuracy
                metrics = {"test_accuracy": accuracy(model, ctx.eval_batches(tokenizer, "test"), ctx.placement)}
            _save_model(model, tokenizer, tmp / "model")
            _write_metrics(tmp, {**metrics, **ctx.placement.record()})
        return self.step("teacher", config, [], build)

    def stage(self, cfg, parent: Artifact, teacher, ctx, index: int) -> Artifact:
        """One recipe stage. Its model and tokenizer are its parent artifact's, or the teacher's when the stage
        declares starts_from_teacher (distillation builds a new model out of the teacher)."""
        from edgecompress.registry import STAGES
        stage = STAGES.get(cfg.kind)

        def build(tmp: Path) -> None:
            import torch
            progress.log(f"[{index + 1}-{cfg.kind}] on {ctx.placement}")
            torch.manual_seed(self.recipe.seed + index)
            model = teacher.model if stage.starts_from_teacher else load_artifact_model(parent)
            # Each artifact carries its own tokenizer: vocabulary trimming changes the ids downstream of it.
            res = stage(model, load_artifact_tokenizer(parent), cfg, ctx, teacher)
            _save_model(res.model, res.tokenizer, tmp / "model")
            _write_metrics(tmp, {**res.metrics, **ctx.placement.record()})
        return self.step(cfg.kind, {"stage": cfg.model_dump(), "seed": self.recipe.seed, "index": index,
                                    **ctx.placement.id_part()},
                          [parent.id], build, label=f"{index + 1}-{cfg.kind}")

    def quant_for(self, precision: str):
        """The int8 intent with the device's flavour filled in (preset "profile"), or None for fp32."""
        return self.recipe.quantize.with_profile(self.plan.profile.int8) if precision == "int8" else None

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
            validation=lambda: [(b[0], b[1]) for b in rows("validation", 32, False)], placement=self.plan.placement)

    def export(self, fmt: str, precision: str, parent: Artifact, label: str) -> Artifact:
        from edgecompress.export.base import IOSpec, file_mb, read_io_beside
        from edgecompress.registry import EXPORTERS
        from edgecompress.bundle import write_bundle
        from edgecompress.verification import write_expected
        r, spec = self.recipe, FORMATS[fmt]
        quant = self.quant_for(precision)
        labels = self.splits["train"].label_names

        def build(tmp: Path) -> None:
            import torch
            torch.manual_seed(r.seed)
            model, tokenizer = load_artifact_model(parent), load_artifact_tokenizer(parent)
            exporter = EXPORTERS.get(fmt)(batch=r.bench.batch)
            io = IOSpec(vocab_size=model.config.vocab_size, num_labels=model.config.num_labels,
                        max_seq_len=r.export.max_seq_len, pad_token_id=tokenizer.pad_token_id or 0)
            t0 = time.perf_counter()
            with progress.status(f"exporting {label}"):
                res = exporter.export(model, io, quant, self.calib_data(quant, tokenizer), tmp)
            export_s = time.perf_counter() - t0
            io = read_io_beside(res.file)  # the exporter's own io.json (tflite adds its static shape)
            infer = exporter.load(res.file, threads=r.bench.threads)
            expected = write_expected(tmp, io, infer, model, r.bench.batch if spec.fixed_batch else 1, r.seed,
                                      exact=precision == "fp32")
            write_bundle(tmp, tokenizer, labels, io, fmt, precision)  # what an app needs beside the model file
            _write_metrics(tmp, {"format": fmt, "precision": precision, "file": res.file.name,
                                 "file_mb": file_mb(res.file), "export_seconds": round(export_s, 2),
                                 "notes": res.notes, "details": res.details, "runtime": spec.runtime, **expected})
        return self.step("export", export_config(r, fmt, precision, quant, labels), [parent.id], build, label=label)

    def verify(self, exp: Artifact, parent: Artifact, label: str) -> Artifact:
        from edgecompress.export.base import read_io_beside
        from edgecompress.registry import EXPORTERS
        from edgecompress.verification import verify_file
        r = self.recipe

        def build(tmp: Path) -> None:
            model, tokenizer = load_artifact_model(parent), load_artifact_tokenizer(parent)
            file = exp.path / exp.metrics["file"]
            infer = EXPORTERS.get(exp.metrics["format"])().load(file, threads=r.bench.threads)
            test = self.splits["test"].subset(r.export.max_test_samples, r.seed)
            with progress.status(f"verifying {label}"):
                metrics = verify_file(infer, read_io_beside(file), model, tokenizer, test,
                                      shapes=r.export.parity_shapes, seed=r.seed)
            _write_metrics(tmp, metrics)
        return self.step("verify", verify_config(r, self._data_id), [exp.id, parent.id], build,
                          label=f"verify-{label}")

    def bench(self, exp: Artifact, label: str) -> Artifact:
        from edgecompress.bench.harness import bench_file
        b = self.recipe.bench

        def build(tmp: Path) -> None:
            import tempfile
            m = exp.metrics
            texts = self.splits["test"].subset(E2E_TEXTS, self.recipe.seed).texts  # a fixed sample of real sentences
            with tempfile.TemporaryDirectory(prefix="edgecompress-texts-") as d:
                (Path(d) / "texts.json").write_text(json.dumps(texts))
                tok = exp.path / "tokenizer.json"
                res = bench_file(exp.path / m["file"], exp.path / "io.json", m["runtime"], threads=b.threads,
                                 warmup_runs=b.warmup_runs, runs=b.runs, batch=b.batch, seq_len=b.seq_len,
                                 timeout_s=b.timeout_s, expected_json=exp.path / "expected.json",
                                 runner=self.plan.profile.runner_for(m["format"]),
                                 tokenizer_json=tok if tok.is_file() else None, texts_json=Path(d) / "texts.json")
            if not res.get("ok", False):
                raise RuntimeFailure(f"benchmark of {label} failed: {res.get('error', 'no result')}")
            _write_metrics(tmp, res)
        config = {**bench_config(self.recipe, self.plan.profile.runner_for(exp.metrics["format"])),
                  "e2e_texts": E2E_TEXTS, "data": self._data_id}
        return self.step("bench", config, [exp.id], build, label=f"bench-{label}", force=self.rebench)

    def load_data(self):
        """The splits (and the data's identity for artifact ids), once; the stages' data context."""
        from edgecompress.compress.base import StageContext
        from edgecompress.data import fingerprint, load_splits
        r = self.recipe
        self._data_id = fingerprint(r.data)
        self.splits = load_splits(r.data)
        return StageContext(self.splits, r.data.max_seq_len, r.seed, self.plan.placement)

    # -- whole run -----------------------------------------------------------------------------------------
    def run(self) -> dict:
        from edgecompress.compress.base import Teacher
        r = self.recipe
        t_start = time.perf_counter()
        ctx = self.load_data()
        teacher_art = self.teacher(ctx)
        teacher = Teacher(load_artifact_model(teacher_art), load_artifact_tokenizer(teacher_art))
        current = teacher_art
        for i, cfg in enumerate(r.stages):
            current = self.stage(cfg, current, teacher, ctx, i)
        student_art = current
        rows, failures = [], []
        jobs = [(f, p, student_art, f"{f}-{p}") for f in r.export.formats for p in r.export.precisions]
        if "onnx" in r.export.formats:
            jobs.insert(0, ("onnx", "fp32", teacher_art, "teacher-onnx-fp32"))
        for fmt, prec, parent, label in jobs:
            try:
                exp = self.export(fmt, prec, parent, label)
                ver = self.verify(exp, parent, label)
                bench = self.bench(exp, label)
                rows.append(_row(label, exp, ver, bench))
            except EdgeCompressError as e:
                failures.append({"label": label, "error": str(e)})
                progress.log(f"[{label}] FAILED: {e}")
            except Exception as e:  # noqa: BLE001 - one format failing must not lose the others
                failures.append({"label": label, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"})
                progress.log(f"[{label}] FAILED: {failures[-1]['error']}")
                if self.debug:
                    traceback.print_exc()
        from edgecompress.report import build_report, write_report
        report = build_report(self, teacher_art, student_art, rows, failures, time.perf_counter() - t_start)
        from edgecompress.compress.train import process_group
        dist = process_group()
        if dist is None or dist.get_rank() == 0:  # one writer of the run folder, as for the store
            write_report(report, self.run_dir)
        return report


def _row(label: str, exp: Artifact, ver: Artifact, bench: Artifact) -> dict:
    m, v, b = exp.metrics, ver.metrics, bench.metrics
    return {"label": label, "format": m["format"], "precision": m["precision"], "runtime": m["runtime"],
            "test_accuracy": v["test_accuracy"], "test_accuracy_by_domain": v.get("test_accuracy_by_domain"),
            "label_agreement_vs_torch": v.get("test_label_agreement_vs_torch"),
            "parity_max_abs_diff": v["parity"]["max_abs_diff"], "parity": v["parity"],
            "p50_ms": b.get("p50_ms"), "p90_ms": b.get("p90_ms"), "p99_ms": b.get("p99_ms"),
            "e2e_p50_ms": b.get("e2e_p50_ms"), "e2e_p90_ms": b.get("e2e_p90_ms"),
            "tokenize_p50_ms": b.get("tokenize_p50_ms"),
            "load_ms": b.get("load_ms"), "peak_rss_mb": b.get("peak_rss_mb"), "file_mb": m["file_mb"],
            "threads": b.get("threads"), "runner": b.get("runner", "python"), "notes": m.get("notes", []),
            "export_id": exp.id, "verify_id": ver.id, "bench_id": bench.id,
            "export_path": str(exp.path)}


def run(recipe_path: Optional[Path], out_dir: Path = Path("runs"), quiet: bool = False, json_output: bool = False,
        rebench: bool = False, debug: bool = False) -> int:
    progress.set_quiet(quiet or json_output)
    t0 = time.perf_counter()
    recipe = load_recipe(recipe_path)
    for folder, what in ((Path(out_dir), "--out"), (home(), "EDGECOMPRESS_HOME")):
        _check_folder(folder, what)
    plan = make_plan(recipe)
    progress.log(f"plan OK in {time.perf_counter() - t0:.2f} s: {' -> '.join(plan.steps)}; training on {plan.placement}")
    run_dir = Path(out_dir) / recipe.name
    run_dir.mkdir(parents=True, exist_ok=True)
    from edgecompress.noise import to_log
    with to_log(run_dir / "run.log", enabled=not debug):  # third-party warnings and C++ prints; --debug shows them
        report = Runner(plan, run_dir, rebench=rebench, debug=debug).run()
    if json_output:
        print(json.dumps(report, default=_json_default))
    else:
        progress.log(f"report: {run_dir / 'report.md'} (third-party messages: {run_dir / 'run.log'})")
        from edgecompress.report import to_markdown
        print(to_markdown(report))
    if report["failures"]:
        return 3
    return 1 if report.get("budget_violations") else 0
