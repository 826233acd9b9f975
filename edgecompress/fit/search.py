"""The fit search: measure candidates on the target (no training), rank the ones that meet the budgets, distil the top
k with the recipe's full protocol, and keep the best one that still meets every budget after compression: best by
the task's validation score (tasks.Score: class accuracy, or recall@10 of the teacher's neighbours for embeddings).

Cost is measured, not guessed: a dense model's latency does not depend on its weights' values, so a student whose
weights are sliced from the teacher (modeling.student_from_config) runs as fast as the trained one will. Every
measurement is an artifact (step "fit-measure", parent: the teacher): a rerun or a widened search reuses them, and a
killed fit resumes.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from edgecompress import progress
from edgecompress.errors import RuntimeFailure
from edgecompress.fit.cost import CostModel
from edgecompress.fitspace import Candidate, at_least, candidates, clearly_misses, judged, misses
from edgecompress.formats import FORMATS
from edgecompress.tasks import task_row


@dataclass
class Outcome:
    """What the search found: a row per candidate (measured, skipped, trained) and what it was judged on."""
    rows: list[dict] = field(default_factory=list)
    cost_model: dict = field(default_factory=dict)
    teacher_score: Optional[float] = None  # the teacher's value of the task's metric (1.0 where it is the reference)
    emulated: bool = False
    chosen_on: str = ""  # the score select() compared: the task's validation score; test only where a run had none


def probe_order(cands: list[Candidate], probe: int) -> list[Candidate]:
    """`probe` candidates spread evenly over the cost range first (they train the cost model), then the rest."""
    if len(cands) <= probe:
        return list(cands)
    step = (len(cands) - 1) / (probe - 1)
    first = [cands[round(i * step)] for i in range(probe)]
    return first + [c for c in cands if c not in first]


class FitSearch:
    def __init__(self, runner, space, budgets: dict[str, float], transport, target: str, remeasure: bool = False):
        self.runner, self.space, self.budgets = runner, space, budgets
        self.session, self.graph = runner.session, runner.plan.graph  # fit's nodes hang under the run's teacher
        self.remeasure = remeasure  # latency is of the device now: a busy or changed device wants fresh numbers
        self.transport, self.target = transport, target
        self.recipe = runner.recipe
        self.task = task_row(self.recipe)
        self.out = Outcome()
        self._keep: dict[int, list[int]] = {}

    # -- setup ---------------------------------------------------------------------------------------------
    def prepare(self):
        """The data, the (cached) teacher and its tokenizer; the candidates of the space."""
        from edgecompress.steps import load_artifact_tokenizer
        self.ctx = self.session.ctx
        self.teacher_art = self.session.artifact("teacher")
        self.teacher = self.session.load_model(self.teacher_art)
        self.tokenizer = load_artifact_tokenizer(self.teacher_art)
        ref = self.task.score.teacher
        self.out.teacher_score = self.teacher_art.metrics.get(ref) if ref else 1.0
        from edgecompress.families import family_of
        self.cands = candidates(self.space, family_of(self.teacher).dims(self.teacher.config),  # canonical names
                                self.task.keeps_teacher_width)
        return self.cands

    def kept(self, min_count: int) -> tuple[list[int], object]:
        """Token ids a trim to `min_count` keeps (the trim_vocab stage's own rule) and the tokenizer over them (its
        ids are what the trimmed student reads: calibration rows and the pad id), computed once per count."""
        if min_count not in self._keep:
            from edgecompress.compress.vocabulary import completed_ids, kept_ids, token_counts, trimmed_tokenizer
            counts = token_counts(self.tokenizer, self.ctx.splits["train"].texts)
            keep = completed_ids(self.tokenizer, kept_ids(self.tokenizer, counts, min_count))
            self._keep[min_count] = (keep, trimmed_tokenizer(self.tokenizer, keep))
        return self._keep[min_count]

    def features(self, c: Candidate) -> dict:
        vocab = len(self.kept(c.min_count)[0]) if c.min_count else self.teacher.config.vocab_size
        emb = (vocab + self.teacher.config.max_position_embeddings + 2) * c.hidden
        return {"format": c.format, "gflops": c.gflops(self.recipe.bench.seq_len),
                "params": c.encoder_params() + emb, "vocab_size": vocab}

    # -- phase 1: measure ----------------------------------------------------------------------------------
    def measure(self, c: Candidate) -> dict:
        """Build the sliced student, export it int8 in its format, bench it on the target (cached artifact)."""
        b, profile = self.recipe.bench, self.runner.plan.profile
        runner = profile.runner_for(c.format)
        config = {"candidate": c.to_json(), "bench": b.model_dump(), "target": self.target, "runner": runner,
                  "quantize": self.session.quant_for("int8").model_dump()}

        def build(tmp: Path) -> None:
            metrics = self._build_and_bench(c, tmp, runner)
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return self._execute(f"fit-{c.name}", "fit-measure", config, build, force=self.remeasure).metrics

    def _execute(self, label: str, step: str, config: dict, build, force: bool = False):
        """A fit node under the teacher, added to the run's graph and executed by its engine (cached, locked)."""
        node = self.graph[label] if label in self.graph else self.graph.add(label, step, config, ("teacher",))
        return self.session.engine.execute(node, build, force=force)

    def _build_and_bench(self, c: Candidate, tmp: Path, runner: str) -> dict:
        from edgecompress.bench.harness import bench_file
        from edgecompress.export.iospec import IOSpec
        from edgecompress.recipe import StudentArchCfg
        from edgecompress.registry import EXPORTERS
        from edgecompress.modeling import student_from_config
        b = self.recipe.bench
        student, tokenizer = student_from_config(self.teacher, StudentArchCfg(**c.arch())), self.tokenizer
        if c.min_count:
            from edgecompress.compress.vocabulary import trim_embeddings
            keep, tokenizer = self.kept(c.min_count)
            trim_embeddings(student, keep, tokenizer.pad_token_id)
        io = IOSpec.for_model(student, tokenizer, self.recipe.export.max_seq_len)
        quant = self.session.quant_for("int8")
        res = EXPORTERS.get(c.format)(batch=b.batch).export(student, io, quant,
                                                            self.session.calib_data(quant, tokenizer), tmp)
        r = bench_file(res.file, res.file.parent / "io.json", FORMATS[c.format].runtime, b, transport=self.transport,
                       runner=runner)
        res.file.unlink()  # the measurement is the artifact, not the untrained file
        if not r.get("ok"):
            raise RuntimeFailure(f"measuring {c.name} on {self.target} failed: {r.get('error')}")
        keep = ("p50_ms", "p90_ms", "load_ms", "peak_rss_mb", "file_mb", "emulated", "runner", "machine")
        return {**{k: r.get(k) for k in keep}, **self.features(c)}

    def search(self) -> list[dict]:
        """Measure the probe candidates, then decide every other one: by size against what was measured (a
        candidate at least as large as one over budget beyond the noise margin is over too; one no larger than a
        feasible one fits), by the cost model when it clearly misses, else by measuring it. After the probes the
        next candidate measured is the one whose result decides the most undecided others (a bisection of the size
        order)."""
        model, rows = CostModel(), {}
        pending = [{**c.to_json(), **self.features(c)} for c in probe_order(self.cands, self.space.probe)]
        for i in range(len(pending)):
            row = pending.pop(0 if i < self.space.probe else _most_telling(pending))
            rows[row["name"]] = row
            row.update(self._decide(row, rows, model, probing=i < self.space.probe))
            progress.log(f"  [{i + 1}/{len(self.cands)}] {row['name']}: {row.pop('_log')}")
        self.out.cost_model = {k: model.held_out_error(k) for k in ("p90_ms", "file_mb", "peak_rss_mb", "load_ms")}
        self.out.rows = [rows[c.name] for c in self.cands]  # cheapest first, as the space lists them
        return self.out.rows

    def _decide(self, row: dict, rows: dict, model: CostModel, probing: bool) -> dict:
        """This candidate's status and why: inferred from a measured one, skipped by the cost model, or measured."""
        done = [r for r in rows.values() if r.get("measured")]
        over = next((r for r in done if r["status"] == "over budget" and at_least(row, r)
                     and clearly_misses(r, self.budgets, self.out.emulated)), None)
        if over is not None and not probing:
            return {"status": "skipped", "why": f"at least as large as {over['name']}, which misses {over['why']}",
                    "_log": f"skipped (at least as large as {over['name']})"}
        fits = next((r for r in done if r["status"] == "feasible" and at_least(r, row)), None)
        if fits is not None and not probing:
            return {"status": "feasible", "inferred_from": fits["name"],
                    "_log": f"meets the budgets (no larger than {fits['name']}; not measured)"}
        skip = [] if probing else model.clearly_over(row["format"], row, self.budgets,
                                                       judged(self.budgets, self.out.emulated))
        if skip:
            return {"status": "skipped", "why": "; ".join(skip), "_log": f"skipped ({skip[0]})"}
        m = self.measure(self._cand(row))
        self.out.emulated = self.out.emulated or bool(m.get("emulated"))
        model.points.append({**m, "format": row["format"]})
        miss = misses(m, self.budgets, self.out.emulated)
        return {**m, "measured": True, "status": "over budget" if miss else "feasible", "why": "; ".join(miss),
                "_log": f"p90 {m['p90_ms']:.2f} ms, {m['file_mb']:.2f} MiB"
                        + (f", misses {miss[0]}" if miss else ", meets the budgets")}

    # -- phase 2: rank ---------------------------------------------------------------------------------------
    def rank(self, feasible: list[dict]) -> list[dict]:
        """Feasible candidates, most promising first. capacity: transformer weights (what distillation can fill);
        proxy: the task's validation score after a short distillation (proxy_train_samples rows, one epoch)."""
        for r in feasible:
            r["capacity"] = self._cand(r).encoder_params()
        if self.space.rank_by == "proxy":
            key = f"proxy_{self.task.score.val}"
            for r in feasible:
                r[key] = self.proxy(self._cand(r))
            return sorted(feasible, key=lambda r: (-r[key], -r["capacity"]))
        return sorted(feasible, key=lambda r: (-r["capacity"], r.get("p90_ms") or 0))

    @staticmethod
    def _cand(row: dict) -> Candidate:
        return Candidate(row["layers"], row["hidden"], row["heads"], row["ffn"], row["min_count"], row["format"])

    def proxy(self, c: Candidate) -> float:
        """A short distillation of the sliced student; its validation score, cached with the measurements."""
        from edgecompress.compress.base import Teacher
        from edgecompress.compress.distill import distill
        from edgecompress.recipe import DistillCfg, StudentCfg, TrainCfg
        n = self.space.proxy_train_samples
        cfg = DistillCfg(student=StudentCfg(config=c.arch()), train=TrainCfg(
            epochs=1, learning_rate=2e-4, batch_size=32, max_train_samples=n))
        key = self.task.score.val
        config = {"candidate": c.arch(), "distill": cfg.model_dump()}
        # An embedding's distillation loss lives in the run's context, not in cfg: part of the id, added only where
        # there is one so a classifier's cached proxies keep theirs.
        if self.ctx.embedding is not None:
            config["embedding_loss"] = asdict(self.ctx.embedding)

        def build(tmp: Path) -> None:
            import torch
            torch.manual_seed(self.recipe.seed)
            res = distill(self.teacher, self.tokenizer, cfg, self.ctx, Teacher(self.teacher, self.tokenizer))
            (tmp / "metrics.json").write_text(json.dumps({key: res.metrics[key]}))
        return self._execute(f"fit-proxy-{c.name}", "fit-proxy", config, build).metrics[key]

    # -- phase 3: train the top k with the recipe's protocol, measure again ------------------------------------
    def train(self, row: dict, runs_dir: Path) -> dict:
        """Distil, compress and export the candidate with the full protocol; judge the file on the target."""
        from edgecompress.artifact import open_export
        from edgecompress.bench.harness import bench_file
        from edgecompress.pipeline import Runner
        from edgecompress.plan import make_plan
        c = self._cand(row)
        recipe = recipe_for(self.recipe, c)
        report = Runner(make_plan(recipe), runs_dir / recipe.name, debug=self.runner.debug).run()
        exp_row = next((x for x in report["rows"] if x["label"] == f"{c.format}-int8"), None)
        if exp_row is None:
            raise RuntimeFailure(f"training {c.name} produced no {c.format}-int8 export: {report['failures']}")
        exp = Path(exp_row["export_path"])
        files = open_export(exp)  # confined to the folder and hash-checked, like every artifact file read
        b = recipe.bench
        m = bench_file(files.model_file, files.io_json, FORMATS[c.format].runtime, b, transport=self.transport,
                       runner=self.runner.plan.profile.runner_for(c.format))
        if not m.get("ok"):
            raise RuntimeFailure(f"measuring the trained {c.name} on {self.target} failed: {m.get('error')}")
        final = {k: m.get(k) for k in ("p50_ms", "p90_ms", "load_ms", "peak_rss_mb", "file_mb")}
        miss = misses(final, self.budgets, self.out.emulated)
        # scores: the file's metric on test (verify's) and the compressed torch student's on validation
        metric, val = self.task.metric, self.task.score.val
        return {"recipe": recipe, "final": final, "scores": {metric: exp_row[metric], val: report["student"].get(val)},
                "misses_after_training": miss, "export_path": str(exp)}

    def select(self, trained: list[tuple[dict, dict]]) -> Optional[tuple[dict, dict]]:
        """The trained candidate with the best score that still meets every budget after compression. The score is
        the validation split's: choosing on the test split would make the reported test score optimistic."""
        ok = [(row, t) for row, t in trained if not t["misses_after_training"]]
        metric, val = self.task.metric, self.task.score.val
        key = val if all(t["scores"].get(val) is not None for _, t in ok) else metric
        self.out.chosen_on = key
        return max(ok, key=lambda rt: (rt[1]["scores"][key], rt[1]["scores"][metric])) if ok else None


def _most_telling(pending: list[dict]) -> int:
    """Index of the pending candidate whose measurement decides the most others either way: min(#pending at least
    as large, #pending no larger), ties to the cheaper one."""
    import numpy as np
    dims = np.array([[r["layers"], r["hidden"], r["ffn"], r["vocab_size"]] for r in pending])
    fmt = np.array([r["format"] for r in pending])
    ge = (dims[:, None, :] >= dims[None, :, :]).all(-1) & (fmt[:, None] == fmt[None, :])  # ge[a, b]: a >= b
    told = np.minimum(ge.sum(0), ge.sum(1))
    cheapest = np.array([r["gflops"] for r in pending])
    return int(np.lexsort((cheapest, -told))[0])


def search_plan(recipe, c: Candidate):
    """The plan the search runs under: validated as this candidate's recipe, carrying the user's recipe."""
    from dataclasses import replace

    from edgecompress.plan import make_plan
    return replace(make_plan(recipe_for(recipe, c)), recipe=recipe)


def recipe_for(r, c: Candidate):
    """The user's recipe with this candidate as its student: distil at the candidate's architecture, trim the
    vocabulary when the candidate does, export its format as int8; every other stage and setting as written."""
    from edgecompress.recipe import DistillCfg, StudentCfg, VocabTrimCfg, parse_recipe
    distill = next((s for s in r.stages if s.kind == "distill"), DistillCfg())
    distill = distill.model_copy(update={"student": StudentCfg(config=c.arch())})
    trim = next((s for s in r.stages if s.kind == "trim_vocab"), VocabTrimCfg())  # its corpus/recovery as written
    rest = [s for s in r.stages if s.kind not in ("distill", "trim_vocab")]
    stages = [distill] + ([trim.model_copy(update={"min_count": c.min_count})] if c.min_count else []) + rest
    # Only what the user (or the candidate) set: a recipe reads some fields' being written, not just their values
    # (data.label_column asks for labels, a distill's alpha is refused on an embedding recipe, a quantize
    # per_channel overrides the profile's), and a full dump would write them all.
    data = r.model_dump(mode="json", exclude={"fit"}, exclude_unset=True)
    data.update(name=f"{r.name}-fit-{c.name}".replace(".", "_"),
                stages=[{"kind": s.kind, **s.model_dump(mode="json", exclude_unset=True)} for s in stages],
                export={**data.get("export", {}), "formats": [c.format], "precisions": ["int8"]})
    return parse_recipe(data, f"fit candidate {c.name}")


def closest(rows: list[dict], budgets: dict[str, float]) -> Optional[dict]:
    """The measured candidate that misses its budgets by the least (sum of relative excesses)."""
    measured = [r for r in rows if r["status"] in ("over budget", "feasible")]

    def excess(r: dict) -> float:
        return sum(max(0.0, r[k] / v - 1) for k, v in budgets.items() if r.get(k) is not None)
    return min(measured, key=excess) if measured else None
