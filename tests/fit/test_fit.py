"""`edgecompress fit`: the search space, the cost model, and a whole fit on a tiny teacher."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from hypothesis import given, settings, strategies as st

from edgecompress.errors import UserInputError
from edgecompress.fit.cost import CostModel
from edgecompress.fit.command import parse_budgets
from edgecompress.fitspace import Candidate, candidates, misses
from edgecompress.fit.search import probe_order
from edgecompress.recipe import FitCfg

TEACHER = {"hidden_size": 384, "num_attention_heads": 12, "num_hidden_layers": 6}


def test_space_is_every_combination_cheapest_first():
    # execute
    cands = candidates(FitCfg(depths=[2, 4], widths=[128, 256], ffn_ratios=[2.0], vocab_min_counts=[None, 3],
                              formats=["onnx"]), TEACHER)
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
                                          ([], "at least one --budget"), (["p90_ms=4", "p90_ms=5"], "given twice")])
def test_bad_budgets_are_one_line(items, needle):
    # execute / assert
    with pytest.raises(UserInputError, match=needle):
        parse_budgets(items)


def test_emulated_targets_judge_what_bench_judges_there():
    # setup: bench skips the same metrics under emulation (one rule, profiles.EMULATION_SKEWED)
    from edgecompress.bench.budget import check_budgets
    from edgecompress.profiles import load_profile
    measured = {"p90_ms": 900.0, "file_mb": 9.0, "peak_rss_mb": 150.0}
    budgets = {"p90_ms": 10.0, "file_mb": 8.0, "peak_rss_mb": 100.0}
    # execute
    fit_misses = misses(measured, budgets, emulated=True)
    bench = check_budgets({**measured, "emulated": True, "device": "d", "artifact": "a"}, load_profile("rpi4"),
                          "onnx-int8")
    # assert
    assert sorted(misses(measured, budgets)) == ["file_mb 9 > 8", "p90_ms 900 > 10", "peak_rss_mb 150 > 100"]
    assert fit_misses == ["file_mb 9 > 8"]
    assert {c.metric for c in bench if c.status == "skipped"} == {"p90_ms", "peak_rss_mb", "load_ms"} & \
        {c.metric for c in bench}


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


def _fit(recipe, out, env, *budget, target="local"):
    """`edgecompress fit RECIPE --target TARGET --out OUT --quiet --budget ...` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "edgecompress", "fit", str(recipe), "--target", target, "--out",
                           str(out), "--quiet", "--budget", *budget], capture_output=True, text=True, env=env,
                          timeout=900)


@pytest.fixture(scope="module")
def tiny_fit(tmp_path_factory):
    from edgecompress.zoo import save_tiny_teacher, write_small_vader
    d = tmp_path_factory.mktemp("fit")
    recipe = {"name": "tinyfit",
              "teacher": {"source": str(save_tiny_teacher(d / "teacher")),
                          "finetune": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 16}},
              "data": {"source": str(write_small_vader(d / "data")), "max_seq_len": 64},
              "stages": [{"kind": "distill", "train": {"epochs": 1, "learning_rate": 2e-3, "batch_size": 16}}],
              "export": {"max_seq_len": 64}, "bench": {"threads": 1, "seq_len": 32, "warmup_runs": 1, "runs": 5},
              "fit": {"depths": [1, 2], "widths": [16, 32], "ffn_ratios": [2.0], "vocab_min_counts": [None, 2],
                      "formats": ["onnx"], "probe": 3, "top_k": 2}}
    (d / "r.yaml").write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "EDGECOMPRESS_HOME": str(d / "home")}

    def fit(*budget):
        return _fit(d / "r.yaml", d / "fit", env, *budget)
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
    # the winner's own training run, written by fit under fit/<name>/runs/<the winner's recipe name>/
    name = yaml.safe_load((out / "recipe.yaml").read_text())["name"]
    fitted = {r["label"]: r for r in json.loads((out / "runs" / name / "report.json").read_text())["rows"]}
    ids = ("export_id", "verify_id", "bench_id")
    assert "onnx-int8" in rows and [rows["onnx-int8"][k] for k in ids] == [fitted["onnx-int8"][k] for k in ids]
    assert rows["onnx-int8"]["test_accuracy"] == pytest.approx(win["test_accuracy"])
    assert json.loads((d / "fit" / "tinyfit" / "report.json").read_text())["winner"] == win["name"]


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


def _search_over(cands, cost, budgets, probe=3):
    """A FitSearch whose measurements come from `cost(candidate) -> metrics`, counting what it measures."""
    from edgecompress.fit.search import FitSearch, Outcome
    s = FitSearch.__new__(FitSearch)
    s.space, s.budgets, s.out, s.cands = FitCfg(probe=probe), budgets, Outcome(), cands
    s.features = lambda c: {"format": c.format, "gflops": c.gflops(128), "params": c.encoder_params(),
                            "vocab_size": 1000 if c.min_count else 30000}
    s.measured = []

    def measure(c):
        s.measured.append(c.name)
        return {**cost(c), **s.features(c)}  # a measurement carries the candidate's features, as measure() writes
    s.measure = measure
    return s


@settings(max_examples=150, deadline=None)
@given(p90=st.floats(0.05, 3.0), file_mb=st.floats(0.5, 12.0), noise=st.integers(0, 2**16))
def test_every_candidate_decided_without_measuring_is_decided_right(p90, file_mb, noise):
    # setup: costs that grow with every dimension (what the search relies on), a space of 36 in two formats, and
    # latency noise drawn per candidate (as each measurement has its own): within the noise margin a miss must not
    # decide a larger candidate, whose own latency may come out lower
    cands = candidates(FitCfg(depths=[2, 3, 4], widths=[128, 192, 256], ffn_ratios=[2.0, 3.0],
                              vocab_min_counts=[None, 3], formats=["onnx", "pte"]), TEACHER)
    lo, hi = 0.96, 1.04
    jitter = dict(zip((c.name for c in cands), np.random.default_rng(noise).uniform(lo, hi, len(cands))))

    def cost(c, noisy=True):
        scale = (0.7 if c.format == "pte" else 1.0) * (jitter[c.name] if noisy else 1.0)
        vocab = 1000 if c.min_count else 30000
        return {"p90_ms": scale * c.gflops(128) * 8, "file_mb": (c.encoder_params() + vocab * c.hidden) / 2**20,
                "p50_ms": 1.0, "load_ms": 1.0, "peak_rss_mb": 50.0}
    s = _search_over(cands, cost, {"p90_ms": p90, "file_mb": file_mb})
    within_noise = {k: v * (hi / lo if k == "p90_ms" else 1.0) for k, v in s.budgets.items()}
    # execute
    rows = {r["name"]: r for r in s.search()}
    # assert: each decision matches the noise-free truth (a skip exactly; "meets" within the noise), every
    # candidate has a status, fewer were measured than exist
    for c in cands:
        status = rows[c.name]["status"]
        if status == "feasible":
            assert not misses(cost(c, noisy=False), within_noise), (c.name, rows[c.name])
        elif rows[c.name].get("why", "").startswith("at least as large"):
            assert misses(cost(c, noisy=False), s.budgets), (c.name, rows[c.name])
    assert len(s.measured) < len(cands)
    assert [r["name"] for r in s.out.rows] == [c.name for c in cands]


def test_size_decides_the_rest_of_a_monotone_space():
    # setup: latency budget between the smallest and the largest candidate of one format
    cands = candidates(FitCfg(depths=[1, 2, 3, 4], widths=[128, 256], ffn_ratios=[2.0], vocab_min_counts=[None],
                              formats=["onnx"]), TEACHER)
    s = _search_over(cands, lambda c: {"p90_ms": c.gflops(128), "file_mb": 1.0, "p50_ms": 1.0, "load_ms": 1.0,
                                       "peak_rss_mb": 50.0}, {"p90_ms": 0.3}, probe=2)
    # execute
    rows = s.search()
    # assert: a candidate inferred to fit names the measured one it is no larger than; a skip names the one it
    # is at least as large as
    inferred = [r for r in rows if r.get("inferred_from")]
    skipped = [r for r in rows if r["status"] == "skipped" and r["why"].startswith("at least as large")]
    assert inferred or skipped
    assert all(r["inferred_from"] in s.measured for r in inferred)
    assert all(r["why"].split(" which")[0].split("as large as ")[1].rstrip(",") in s.measured for r in skipped)


def test_a_trimmed_candidate_is_measured_in_a_format_that_calibrates(tiny_fit):
    # setup: the .pte exporter feeds calibration rows to the student: a trimmed one must get the trimmed ids
    d, env, _ = tiny_fit
    recipe = yaml.safe_load((d / "r.yaml").read_text())
    recipe.update(name="tinyfit-pte", fit={"depths": [1], "widths": [16], "ffn_ratios": [2.0], "vocab_min_counts": [2],
                                           "formats": ["pte"], "probe": 2})
    (d / "pte.yaml").write_text(yaml.safe_dump(recipe))
    # execute: a budget nothing meets, so nothing is trained
    p = _fit(d / "pte.yaml", d / "fit", env, "file_mb=0.0001")
    # assert: measured (not a crash on token ids), and named as the closest
    assert p.returncode == 1, p.stderr[-2000:]
    assert "closest: L1-H16-I32-V2-pte (file_mb" in p.stdout


def test_the_space_searches_the_formats_the_recipe_exports_unless_told():
    # setup
    from edgecompress.fitspace import space_of
    from edgecompress.recipe import parse_recipe
    exports = parse_recipe({"export": {"formats": ["onnx", "pte"]}})
    told = parse_recipe({"export": {"formats": ["onnx", "pte"]}, "fit": {"formats": ["pte"]}})
    # execute / assert
    assert space_of(exports).formats == ["onnx", "pte"] and space_of(told).formats == ["pte"]
    assert {c.format for c in candidates(space_of(exports), TEACHER)} == {"onnx", "pte"}


def test_a_space_too_large_to_measure_is_refused_in_one_line():
    # execute / assert
    with pytest.raises(UserInputError, match="the space has 1680 candidates, more than 1000"):
        candidates(FitCfg(depths=[1, 2, 3, 4, 5, 6], widths=[32, 64, 96, 128, 160, 192, 224],
                          ffn_ratios=[1.0, 2.0, 3.0, 4.0, 5.0], vocab_min_counts=[None, 2, 3, 5],
                          formats=["onnx", "pte"]), TEACHER)


def test_fit_reads_a_teacher_whose_config_names_its_dimensions_its_own_way(tmp_path):
    # setup: DistilBERT names them dim / n_heads / n_layers; a budget nothing meets, so nothing is trained
    from edgecompress.zoo import write_small_vader
    from edgecompress.zoo import save_family_model
    teacher = save_family_model("distilbert", tmp_path / "teacher", hidden=32, layers=2, heads=2, ffn=64)
    recipe = {"name": "fitdistil",
              "teacher": {"source": str(teacher), "finetune": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 16,
                                                               "max_train_samples": 64}},
              "data": {"source": str(write_small_vader(tmp_path / "data")), "max_seq_len": 64},
              "stages": [{"kind": "distill", "student": {"config": {"num_hidden_layers": 1, "hidden_size": 16}}}],
              "export": {"formats": ["onnx"], "max_seq_len": 64}, "bench": {"seq_len": 16, "warmup_runs": 1, "runs": 3},
              "fit": {"depths": [1, 2], "widths": [16], "ffn_ratios": [2.0], "vocab_min_counts": [None], "probe": 2}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    # execute
    p = _fit(tmp_path / "r.yaml", tmp_path / "fit", {**os.environ, "EDGECOMPRESS_HOME": str(tmp_path / "home")},
             "file_mb=0.0001")
    # assert: both candidates sliced from it and measured
    assert p.returncode == 1, p.stderr[-2000:]
    rows = json.loads((tmp_path / "fit" / "fitdistil" / "report.json").read_text())["rows"]
    assert sorted(r["name"] for r in rows if r.get("measured")) == ["L1-H16-I32-onnx", "L2-H16-I32-onnx"]


def test_fit_measures_on_an_ssh_target(tiny_fit, sshd):
    # setup: the loopback sshd stands in for a board; a budget nothing meets, so only measurements run there
    d, env, _ = tiny_fit
    recipe = yaml.safe_load((d / "r.yaml").read_text())
    recipe.update(name="tinyfit-ssh", fit={**recipe["fit"], "depths": [1], "vocab_min_counts": [None]})
    (d / "ssh.yaml").write_text(yaml.safe_dump(recipe))
    url = (f"ssh://{sshd.user}@{sshd.host}:{sshd.port}?key={sshd.key}&known_hosts={sshd.known_hosts}"
           f"&workdir={sshd.workdir}")
    # execute
    p = _fit(d / "ssh.yaml", d / "fit", env, "file_mb=0.0001", target=url)
    # assert: each candidate measured through the transport, none trained, the closest named
    assert p.returncode == 1, p.stderr[-2000:]
    doc = json.loads((d / "fit" / "tinyfit-ssh" / "report.json").read_text())
    assert doc["target"].startswith("ssh://") and all(r.get("measured") for r in doc["rows"])
    assert "closest: L1-H16" in p.stdout


@pytest.mark.parametrize("near_p90,skipped", [(1.05, False), (1.5, True)])
def test_a_miss_within_latency_noise_does_not_decide_larger_candidates(near_p90, skipped):
    # setup: a measured candidate over the 1 ms budget, and a larger one not yet decided
    small, large = Candidate(2, 128, 4, 256, None, "onnx"), Candidate(3, 128, 4, 256, None, "onnx")
    s = _search_over([small, large], lambda c: {"p90_ms": 1.2, "file_mb": 1.0, "p50_ms": 1.0, "load_ms": 1.0,
                                                "peak_rss_mb": 50.0}, {"p90_ms": 1.0})
    measured = {**small.to_json(), **s.features(small), "p90_ms": near_p90, "measured": True, "status": "over budget",
                "why": f"p90_ms {near_p90} > 1"}
    # execute
    out = s._decide({**large.to_json(), **s.features(large)}, {small.name: measured}, CostModel(), probing=False)
    # assert: skipped by size only when the miss is beyond the noise margin, else measured
    assert (out["status"] == "skipped") is skipped
    assert s.measured == ([] if skipped else [large.name])


def test_plan_counts_the_fit_candidates(tiny_fit):
    # setup
    d, env, _ = tiny_fit
    recipe = yaml.safe_load((d / "r.yaml").read_text())  # plan checks the recipe as `run` would: a student that fits
    recipe["stages"][0]["student"] = {"config": {"num_hidden_layers": 1, "hidden_size": 16}}
    (d / "plan.yaml").write_text(yaml.safe_dump(recipe))
    # execute
    p = subprocess.run([sys.executable, "-m", "edgecompress", "plan", str(d / "plan.yaml"), "--json"],
                       capture_output=True, text=True, env=env, timeout=300)
    # assert: 2 depths x 2 widths x 1 FFN ratio x 2 vocabularies x 1 format
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout)["fit_candidates"] == {"count": 8, "formats": ["onnx"]}


@pytest.mark.parametrize("teacher,widths,depths", [
    (TEACHER, [128, 192, 256], [2, 3, 4]),                                                        # MiniLM-L6-H384
    ({"hidden_size": 768, "num_attention_heads": 12, "num_hidden_layers": 12}, [256, 384, 512], [2, 3, 4]),
    ({"hidden_size": 640, "num_attention_heads": 8, "num_hidden_layers": 3}, [240, 320, 400], [2, 3]),
    ({"hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1}, [16], [1])])
def test_the_default_space_scales_with_the_teacher(teacher, widths, depths):
    # execute: no depths or widths written
    cands = candidates(FitCfg(vocab_min_counts=[None], ffn_ratios=[2.0], formats=["onnx"]), teacher)
    # assert: whole heads of the teacher's head size, no deeper than the teacher
    assert sorted({c.hidden for c in cands}) == widths and sorted({c.layers for c in cands}) == depths
