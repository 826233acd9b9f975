"""`edgecompress fit` on a sentence-embedding recipe: candidates ranked and chosen by recall@10 of the teacher's
neighbours on the validation split, the file's recall@10 reported where a classifier reports test accuracy."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from edgecompress.fitspace import Candidate

VAL, TEST = "val_recall_at_10", "recall_at_10"


def _embed_recipe(teacher: str, data: str, **over) -> dict:
    return {"name": "tinyfitembed", "task": "embedding",
            "teacher": {"source": teacher, "finetune": None},
            "data": {"source": data, "max_seq_len": 64},
            "stages": [{"kind": "distill", "train": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 16}}],
            "export": {"formats": ["onnx"], "precisions": ["int8"], "max_seq_len": 64},
            "bench": {"threads": 1, "seq_len": 32, "warmup_runs": 1, "runs": 5}, **over}


@pytest.fixture(scope="module")
def embed_fit(tmp_path_factory):
    """One fit on a tiny embedder (hidden 32, 2 layers): 4 candidates at the teacher's width (depth x FFN), each
    feasible under a loose size budget, ranked by a short proxy distillation, the top 3 trained in full."""
    from edgecompress.zoo import corpus_texts, save_tiny_embedder, write_small_vader
    d = tmp_path_factory.mktemp("fitembed")
    teacher = save_tiny_embedder(d / "teacher", "bert", texts=corpus_texts(800))
    recipe = _embed_recipe(str(teacher), str(write_small_vader(d / "data", 160, 64)),
                           fit={"depths": [1, 2], "ffn_ratios": [1.0, 2.0], "vocab_min_counts": [None],
                                "formats": ["onnx"], "probe": 2, "top_k": 3, "rank_by": "proxy",
                                "proxy_train_samples": 64})
    (d / "r.yaml").write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "EDGECOMPRESS_HOME": str(d / "home")}
    p = subprocess.run([sys.executable, "-m", "edgecompress", "fit", str(d / "r.yaml"), "--target", "local", "--out",
                        str(d / "fit"), "--quiet", "--budget", "file_mb=10"], capture_output=True, text=True, env=env,
                       timeout=900)
    return d, env, p


def test_fit_on_an_embedding_recipe_picks_the_best_validation_recall(embed_fit):
    # setup
    d, _, p = embed_fit
    # assert: not refused; the winner is, of the trained candidates that meet the budget, the best on validation
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads((d / "fit" / "tinyfitembed" / "report.json").read_text())
    trained = [r for r in doc["rows"] if r["status"] in ("trained", "winner")]
    assert len(trained) == 3 and sum(r["status"] == "winner" for r in doc["rows"]) == 1
    win = next(r for r in trained if r["status"] == "winner")
    assert win[VAL] == max(r[VAL] for r in trained if r["final_file_mb"] <= 10)
    for r in trained:  # the embedding metric, never a class accuracy
        assert 0 <= r[VAL] <= 1 and 0 <= r[TEST] <= 1 and "test_accuracy" not in r and "val_accuracy" not in r
        assert r is win or r["why"].startswith(("fewer of the teacher's neighbours on validation",
                                                "as many of the teacher's neighbours"))
    ranked = [r for r in doc["rows"] if r["status"] != "skipped"]
    assert all(0 <= r[f"proxy_{VAL}"] <= 1 for r in ranked)  # the proxy ranks by the same score
    assert doc["teacher_recall_at_10"] == 1.0 and "teacher_accuracy" not in doc
    assert doc["verdict"] == p.stdout.strip().splitlines()[-1]
    assert doc["verdict"].startswith(f"found {win['name']}: recall@10 {win[TEST]:.4f} ({win[TEST]:.1%} of the "
                                     f"teacher's neighbours)")
    md = (d / "fit" / "tinyfitembed" / "report.md").read_text()
    assert f"| {VAL} | {TEST} | why |" in md and "test_accuracy" not in md


def test_the_winners_recipe_reruns_to_the_same_file(embed_fit):
    # setup
    d, env, p = embed_fit
    assert p.returncode == 0, p.stderr[-3000:]
    out = d / "fit" / "tinyfitembed"
    win = next(r for r in json.loads((out / "report.json").read_text())["rows"] if r["status"] == "winner")
    # execute: the written recipe is an embedding recipe `run` accepts (only what was set is written)
    run = subprocess.run([sys.executable, "-m", "edgecompress", "run", str(out / "recipe.yaml"), "--out",
                          str(d / "rerun"), "--json"], capture_output=True, text=True, env=env, timeout=900)
    # assert
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {r["label"]: r for r in json.loads(run.stdout)["rows"]}
    assert rows["onnx-int8"]["recall_at_10"] == pytest.approx(win[TEST])


def _search(task: str):
    """A FitSearch reduced to what select() reads."""
    from edgecompress.fit.search import FitSearch, Outcome
    from edgecompress.tasks import TASKS
    s = FitSearch.__new__(FitSearch)
    s.task, s.out = TASKS.row(task), Outcome()
    return s


def _trained(val, test, misses=()):
    return {"name": f"{val}/{test}"}, {"scores": {VAL: val, TEST: test}, "misses_after_training": list(misses)}


def test_select_reads_the_validation_recall_never_the_test_one():
    # setup: the best on test is worse on validation; the best on validation misses a budget once trained
    s = _search("embedding")
    best_test, best_val, over = _trained(0.50, 0.90), _trained(0.70, 0.60), _trained(0.95, 0.95, ["file_mb 9 > 8"])
    # execute
    row, _ = s.select([best_test, over, best_val])
    # assert
    assert row["name"] == "0.7/0.6" and s.out.chosen_on == VAL


def test_select_falls_back_to_the_files_recall_only_where_a_run_reported_no_validation():
    # setup: a student from a store written before validation recall was reported
    s = _search("embedding")
    # execute
    row, _ = s.select([_trained(None, 0.4), _trained(0.9, 0.3)])
    # assert
    assert row["name"] == "None/0.4" and s.out.chosen_on == TEST


def test_a_candidates_recipe_writes_only_what_was_set():
    # setup: an embedding recipe (where a written distill alpha is refused) on unlabelled text (where a written
    # label column asks for labels)
    from edgecompress.fit.search import recipe_for
    from edgecompress.recipe import parse_recipe
    user = parse_recipe(_embed_recipe("t", "d", fit={"depths": [1]}))
    # execute
    cand = recipe_for(user, Candidate(1, 16, 2, 32, 2, "onnx"))
    # assert
    assert cand.task == "embedding" and [s.kind for s in cand.stages] == ["distill", "trim_vocab"]
    assert "label_column" not in cand.data.model_fields_set
    assert "alpha" not in cand.stages[0].model_fields_set and cand.stages[0].student.config.hidden_size == 16
    assert cand.stages[0].train.learning_rate == 1e-3 and cand.export.formats == ["onnx"]


def test_an_embedding_space_keeps_the_teachers_width():
    # setup: the packaged MiniLM's dimensions
    from edgecompress.errors import UserInputError
    from edgecompress.fitspace import candidates
    from edgecompress.recipe import FitCfg
    teacher = {"hidden_size": 384, "num_attention_heads": 12, "num_hidden_layers": 6}
    # execute
    cands = candidates(FitCfg(ffn_ratios=[2.0], vocab_min_counts=[None], formats=["onnx"]), teacher, keep_width=True)
    # assert: widths left unset mean the teacher's; a narrower one is refused in one line
    assert {c.hidden for c in cands} == {384} and sorted({c.layers for c in cands}) == [2, 3, 4]
    with pytest.raises(UserInputError, match="fit.widths: 256: this task's student keeps the teacher's width 384"):
        candidates(FitCfg(widths=[256, 384]), teacher, keep_width=True)
