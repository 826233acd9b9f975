"""`edgecompress fit`: the search space, the cost model, and a whole fit on a tiny teacher."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from edgecompress.errors import UserInputError
from edgecompress.fit.cost import CostModel
from edgecompress.fit.space import Candidate, candidates, misses, parse_budgets
from edgecompress.fit.search import probe_order
from edgecompress.recipe import FitCfg

TEACHER = {"hidden_size": 384, "num_attention_heads": 12, "num_hidden_layers": 6}


def test_space_is_every_combination_cheapest_first():
    # execute
    cands = candidates(FitCfg(depths=[2, 4], widths=[128, 256], ffn_ratios=[2.0], vocab_min_counts=[None, 3]), TEACHER)
    # assert
    assert len(cands) == 8 and all(c.heads == c.hidden // 32 for c in cands)
    costs = [c.gflops(128) for c in cands]
    assert costs == sorted(costs)


@pytest.mark.parametrize("space,needle", [({"widths": [100]}, "multiple of the teacher's head size 32"),
                                          ({"depths": [7]}, "exceeds the teacher's 6 layers")])
def test_space_that_cannot_be_sliced_from_the_teacher_is_refused(space, needle):
    # execute / assert
    with pytest.raises(UserInputError, match=needle):
        candidates(FitCfg(**space), TEACHER)


@pytest.mark.parametrize("items,needle", [(["p90_ms"], "expected KEY=VALUE"), (["speed=3"], "KEY one of"),
                                          (["p90_ms=fast"], "not a number"), (["file_mb=-1"], "positive finite"),
                                          ([], "at least one --budget")])
def test_bad_budgets_are_one_line(items, needle):
    # execute / assert
    with pytest.raises(UserInputError, match=needle):
        parse_budgets(items)


def test_emulated_targets_judge_size_and_memory_only():
    # setup
    measured = {"p90_ms": 900.0, "file_mb": 9.0, "peak_rss_mb": 50.0}
    budgets = {"p90_ms": 10.0, "file_mb": 8.0, "peak_rss_mb": 100.0}
    # execute / assert
    assert misses(measured, budgets) == ["p90_ms 900 > 10", "file_mb 9 > 8"]
    assert misses(measured, budgets, emulated=True) == ["file_mb 9 > 8"]


def test_cost_model_held_out_error_and_what_it_skips():
    # setup: latency exactly linear in GFLOPs plus a little noise
    rng = np.random.default_rng(0)
    model = CostModel([{"format": "onnx", "gflops": g, "params": 1e6 * g, "p90_ms": 1 + 2 * g + rng.normal(0, 0.01),
                        "file_mb": g} for g in (1.0, 2.0, 3.0, 4.0, 5.0)])
    # execute
    err = model.held_out_error("p90_ms")
    # assert: small error, a clearly-too-slow candidate is skipped with the prediction as reason, a close one is not
    assert err["n"] == 5 and err["mean_rel_err"] < 0.02
    over = model.clearly_over("onnx", {"gflops": 10.0, "params": 1e7}, {"p90_ms": 15.0}, {"p90_ms"})
    assert over and over[0].startswith("p90_ms predicted 21")
    assert model.clearly_over("onnx", {"gflops": 6.5, "params": 1e6}, {"p90_ms": 14.0}, {"p90_ms"}) == []


def test_probe_spreads_over_the_cost_range():
    # setup
    cands = [Candidate(1, 8 * i, 1, 8, None, "onnx") for i in range(1, 11)]
    # execute
    order = probe_order(cands, 4)
    # assert
    assert order[:4] == [cands[0], cands[3], cands[6], cands[9]] and sorted(order, key=cands.index) == cands


def test_latency_does_not_depend_on_the_weights_values(tiny_bert, tmp_path):
    # setup: the same architecture with sliced (random here) and with perturbed weights, as a trained one would be
    import copy

    import torch

    from edgecompress.bench.harness import bench_file
    from edgecompress.export.base import IOSpec
    from edgecompress.recipe import QuantSpec
    from edgecompress.registry import EXPORTERS
    trained = copy.deepcopy(tiny_bert)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    io = IOSpec(vocab_size=1100, num_labels=2, max_seq_len=64)
    files = {}
    for name, model in (("sliced", tiny_bert), ("trained", trained)):
        files[name] = EXPORTERS.get("onnx")(batch=1).export(model, io, QuantSpec(), None, tmp_path / name).file
    # execute: the graphs, and p50 interleaved over rounds
    import onnx
    heavy = ("MatMul", "MatMulInteger", "Gemm", "Gather", "Softmax", "LayerNormalization")
    graphs = {k: sorted(n.op_type for n in onnx.load(str(f)).graph.node if n.op_type in heavy) for k, f in files.items()}
    shapes = {k: sorted(tuple(t.dims) for t in onnx.load(str(f)).graph.initializer if len(t.dims) == 2)
              for k, f in files.items()}
    p50 = {k: [] for k in files}
    for _ in range(3):
        for k, f in files.items():
            p50[k].append(bench_file(f, f.parent / "io.json", "onnxruntime", runs=30, warmup_runs=5, seq_len=64)["p50_ms"])
    # assert: the same matrix work (an exporter may fold a bias that is exactly zero in one of them), and the same
    # latency within noise
    assert graphs["sliced"] == graphs["trained"] and shapes["sliced"] == shapes["trained"]
    ratio = np.median(p50["trained"]) / np.median(p50["sliced"])
    assert 0.5 < ratio < 2.0, p50


@pytest.fixture(scope="module")
def tiny_fit(tmp_path_factory):
    from tests._models import save_tiny_teacher, write_small_vader
    d = tmp_path_factory.mktemp("fit")
    recipe = {"name": "tinyfit",
              "teacher": {"source": str(save_tiny_teacher(d / "teacher")),
                          "finetune": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 16}},
              "data": {"source": str(write_small_vader(d / "data")), "max_seq_len": 64},
              "stages": [{"kind": "distill", "train": {"epochs": 1, "learning_rate": 2e-3, "batch_size": 16}}],
              "export": {"max_seq_len": 64}, "bench": {"threads": 1, "seq_len": 32, "warmup_runs": 1, "runs": 5},
              "fit": {"depths": [1, 2], "widths": [16, 32], "ffn_ratios": [2.0], "vocab_min_counts": [None, 2],
                      "probe": 3, "top_k": 2}}
    (d / "r.yaml").write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "EDGECOMPRESS_HOME": str(d / "home")}

    def fit(*budget):
        return subprocess.run([sys.executable, "-m", "edgecompress", "fit", str(d / "r.yaml"), "--target", "local",
                               "--out", str(d / "fit"), "--quiet", "--budget", *budget], capture_output=True,
                              text=True, env=env, timeout=900)
    return d, env, fit


def test_fit_finds_a_student_and_its_recipe_reproduces_the_same_artifacts(tiny_fit):
    # setup
    d, env, fit = tiny_fit
    # execute
    p = fit("file_mb=0.2", "p90_ms=100")
    # assert
    assert p.returncode == 0, p.stderr[-3000:]
    out = d / "fit" / "tinyfit"
    doc = json.loads((out / "report.json").read_text())
    win = next(r for r in doc["rows"] if r["status"] == "winner")
    assert win["final_file_mb"] <= 0.2 and win["min_count"] == 2  # only trimmed students fit 0.2 MiB
    assert all(r["why"] for r in doc["rows"] if r["status"] != "winner")  # every loser says why
    assert (out / "report.html").is_file() and 'id="frontier"' in (out / "report.html").read_text()
    run = subprocess.run([sys.executable, "-m", "edgecompress", "run", str(out / "recipe.yaml"), "--out",
                          str(d / "rerun"), "--json"], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {r["label"]: r for r in json.loads(run.stdout)["rows"]}
    assert f"onnx-int8" in rows and "reusing" not in run.stdout
    trained = json.loads((d / "fit" / "tinyfit" / "report.json").read_text())
    assert rows["onnx-int8"]["test_accuracy"] == pytest.approx(win["test_accuracy"])
    assert trained["winner"] == win["name"]


def test_a_budget_nothing_meets_exits_1_naming_the_closest_candidate(tiny_fit):
    # setup
    _, _, fit = tiny_fit
    # execute
    p = fit("file_mb=0.001")
    # assert
    assert p.returncode == 1, p.stderr[-2000:]
    line = p.stdout.strip().splitlines()[-1]
    assert line.startswith("no candidate meets the budgets; closest: L1-H16") and "file_mb" in line


def test_bad_budget_exits_2(tiny_fit):
    # setup
    _, _, fit = tiny_fit
    # execute
    p = fit("p90=3")
    # assert
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "KEY one of" in p.stderr


def test_a_candidates_recipe_keeps_the_users_protocol():
    # setup: the user's recipe trims with a recovery fine-tune and prunes after distillation
    from edgecompress.fit.search import recipe_for
    from edgecompress.recipe import parse_recipe
    user = parse_recipe({"stages": [{"kind": "distill", "train": {"epochs": 3}},
                                    {"kind": "trim_vocab", "min_count": 5, "recovery": {"epochs": 1}},
                                    {"kind": "prune", "sparsity": 0.2}]})
    trimmed, whole = Candidate(3, 192, 6, 576, 3, "onnx"), Candidate(2, 256, 8, 768, None, "pte")
    # execute
    a, b = recipe_for(user, trimmed), recipe_for(user, whole)
    # assert
    assert [s.kind for s in a.stages] == ["distill", "trim_vocab", "prune"]
    assert a.stages[0].train.epochs == 3 and a.stages[0].student.config.hidden_size == 192
    assert a.stages[1].min_count == 3 and a.stages[1].recovery is not None
    assert [s.kind for s in b.stages] == ["distill", "prune"] and b.export.formats == ["pte"]
