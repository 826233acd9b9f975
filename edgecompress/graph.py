"""The step graph of a run: every artifact the run will make, with the config its id covers and its parents, known
before any work.

`plan` builds it, `plan --json` prints it, `run` executes it node by node (pipeline.py), and `fit` adds its own nodes
under the same teacher. A node's id is `artifact.artifact_id(step, config, parent ids)`, so the ids printed by
`plan` are the folders `run` writes (store/<step>-<id>).

What a config holds is what the output depends on and nothing else (tests/unit/test_step_ids.py pins which recipe
change invalidates which step): changing how many test rows are verified never re-exports a file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from edgecompress.artifact import artifact_id, canonical_json
from edgecompress.formats import FORMATS

E2E_TEXTS = 64  # test sentences timed text -> label beside the model-only latency
BASELINE = "teacher-onnx-fp32"  # the fp32 teacher as an ONNX file: every report row is compared with it


@dataclass(frozen=True)
class Step:
    """One node: `step` is the artifact kind (teacher, a stage kind, export, verify, bench, ...), `label` its name in
    this run (unique), `parents` the labels it is built from. `job` names the export job a failure is captured in
    (the run goes on with the other formats); None means a failure ends the run. `spec` is what the builder needs
    beyond the config (a stage's config object, a format and precision); it is not part of the id."""
    label: str
    step: str
    config: dict
    parents: tuple[str, ...]
    parent_ids: tuple[str, ...]
    id: str
    job: Optional[str] = None
    spec: Any = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict:
        return {"label": self.label, "step": self.step, "id": self.id, "parents": list(self.parents),
                "job": self.job, "config": json.loads(canonical_json(self.config))}


class Graph:
    """Nodes in execution order (parents first)."""

    def __init__(self) -> None:
        self._nodes: dict[str, Step] = {}

    def add(self, label: str, step: str, config: dict, parents: tuple[str, ...] = (), job: Optional[str] = None,
            spec: Any = None) -> Step:
        missing = [p for p in parents if p not in self._nodes]
        if missing or label in self._nodes:
            raise ValueError(f"graph: {label!r} " + (f"has unknown parents {missing}" if missing else "added twice"))
        ids = tuple(self._nodes[p].id for p in parents)
        node = Step(label, step, config, tuple(parents), ids, artifact_id(step, config, list(ids)), job, spec)
        self._nodes[label] = node
        return node

    def __getitem__(self, label: str) -> Step:
        return self._nodes[label]

    def __contains__(self, label: str) -> bool:
        return label in self._nodes

    def __iter__(self) -> Iterator[Step]:
        return iter(self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)

    def jobs(self) -> list[str]:
        return list(dict.fromkeys(n.job for n in self if n.job))

    def job_steps(self, job: str) -> dict[str, str]:
        """The labels of an export job's nodes by step kind (export, verify, bench)."""
        return {n.step: n.label for n in self if n.job == job}

    def to_json(self) -> list[dict]:
        return [n.to_json() for n in self]


# -- what each step's id covers -------------------------------------------------------------------------------------
def teacher_config(r, source_identity: dict, data_id: str, num_labels: int, placement=None) -> dict:
    """placement (compute.Placement) adds what a training's id depends on: a reduced precision, never the device."""
    return {"source": source_identity, "finetune": r.teacher.finetune, "data": data_id, "num_labels": num_labels,
            "seed": r.seed, "max_seq_len": r.data.max_seq_len, **(placement.id_part() if placement else {})}


def stage_config(r, cfg, index: int, placement=None) -> dict:
    return {"stage": cfg.model_dump(), "seed": r.seed, "index": index, **(placement.id_part() if placement else {})}


def export_config(r, fmt: str, precision: str, quant, labels: list[str]) -> dict:
    """What the exported file depends on, and nothing else: the verification and bench settings are their own
    steps' configs, so changing them never re-exports (or re-lowers a .pte)."""
    cfg = {"format": fmt, "precision": precision, "quantize": quant.model_dump() if quant else None,
           "max_seq_len": r.export.max_seq_len, "seed": r.seed, "labels": list(labels),
           "exporter_revision": FORMATS[fmt].revision}
    if FORMATS[fmt].fixed_batch:  # the file bakes in the largest batch it accepts
        cfg["batch"] = r.bench.batch
    return cfg


def verify_config(r, data_id: str) -> dict:
    cfg = {"parity_shapes": [list(s) for s in r.export.parity_shapes], "max_test_samples": r.export.max_test_samples,
           "threads": r.bench.threads, "seed": r.seed, "data": data_id}
    # embedding revisions: 2, verify measures the share of vectors that agree with torch (report judges it); 3, the
    # recall of an int8 and a binary index of the file's vectors
    if r.task == "embedding":
        cfg["embedding_verify"] = 3
    return cfg


def bench_config(r, runner: str, data_id: Optional[str] = None) -> dict:
    cfg = {"bench": r.bench.model_dump(), "profile": r.profile, "target": "local", "runner": runner}
    if data_id is not None:  # the run's bench also times text -> label on a fixed sample of the test split
        cfg.update(e2e_texts=E2E_TEXTS, data=data_id)
    return cfg


def quant_for(r, profile, precision: str):
    """The int8 intent with the device's flavour filled in (preset "profile"), or None for fp32."""
    return r.quantize.with_profile(profile.int8) if precision == "int8" else None


# -- the run's graph --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Facts:
    """What the graph's ids depend on beyond the recipe, read by `plan` (cheap: hashes and headers, no weights
    loaded)."""
    teacher_identity: dict
    data_id: str
    num_labels: int
    labels: list[str]
    # What a task other than classification adds to the teacher's and the stages' ids (embedding: the pooling, the
    # loss); empty for classification, so its ids stay what they were.
    teacher_extra: dict = field(default_factory=dict)
    stage_extra: dict = field(default_factory=dict)
    teacher_int8: bool = False  # also export the teacher itself int8 (embedding: the row quantization alone makes)


def run_graph(r, profile, facts: Facts, placement=None) -> Graph:
    """teacher -> stages -> per (format, precision): export -> verify, bench; plus the fp32 teacher ONNX baseline.
    placement: where the trainings run (compute.Placement; None: the CPU in fp32)."""
    g = Graph()
    g.add("teacher", "teacher", {**teacher_config(r, facts.teacher_identity, facts.data_id, facts.num_labels,
                                                  placement), **facts.teacher_extra})
    student = "teacher"
    for i, cfg in enumerate(r.stages):
        student = g.add(f"{i + 1}-{cfg.kind}", cfg.kind, {**stage_config(r, cfg, i, placement), **facts.stage_extra},
                        (student,), spec=cfg).label
    jobs = [(f, p, student, f"{f}-{p}") for f in r.export.formats for p in r.export.precisions]
    if "onnx" in r.export.formats:
        jobs.insert(0, ("onnx", "fp32", "teacher", BASELINE))
        if facts.teacher_int8 and "int8" in r.export.precisions:  # what quantization alone keeps, beside the student
            jobs.insert(1, ("onnx", "int8", "teacher", "teacher-onnx-int8"))
    for fmt, precision, parent, label in jobs:
        quant = quant_for(r, profile, precision)
        g.add(label, "export", export_config(r, fmt, precision, quant, facts.labels), (parent,), job=label,
              spec=(fmt, precision, quant))
        g.add(f"verify-{label}", "verify", verify_config(r, facts.data_id), (label, parent), job=label)
        g.add(f"bench-{label}", "bench", bench_config(r, profile.runner_for(fmt), facts.data_id), (label,), job=label,
              spec=fmt)
    return g
