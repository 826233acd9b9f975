"""task: embedding end to end on a tiny RoBERTa-style sentence-transformers folder (another family than the packaged
BERT) and a small slice of real data: distill -> prune -> trim_vocab -> every format (int8, + onnx fp32) -> verify
in each runtime (and the teacher int8) -> bench -> predict --json / --rank from the bundle without torch."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from edgecompress.zoo import corpus_texts, save_tiny_embedder, write_small_vader
from tests._cli import run_recipe

FORMATS = ["onnx", "ptl", "pte", "tflite"]


@pytest.fixture(scope="module")
def embed_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("embed")
    recipe = {
        "name": "tinyembed", "task": "embedding",
        "teacher": {"source": str(save_tiny_embedder(tmp_path / "teacher", "roberta", texts=corpus_texts(800))),
                    "finetune": None},
        "data": {"source": str(write_small_vader(tmp_path / "data", 160, 64)), "max_seq_len": 64},
        "embedding": {"loss": "both"},
        "stages": [{"kind": "distill", "student": {"from_teacher_layers": [1]},
                    "train": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 16}},
                   {"kind": "prune", "sparsity": 0.2}, {"kind": "trim_vocab"}],
        "export": {"formats": FORMATS, "precisions": ["int8"], "max_seq_len": 64},
        "bench": {"threads": 1, "seq_len": 32, "warmup_runs": 1, "runs": 3},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "EDGECOMPRESS_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-m", "edgecompress", "run", str(path), "--out", str(tmp_path / "runs"),
                           "--json"], capture_output=True, text=True, env=env, timeout=900)
    return tmp_path, proc


def test_every_format_is_verified_against_torch_and_the_teacher(embed_run):
    # setup
    tmp_path, proc = embed_run
    # assert
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "runs" / "tinyembed" / "report.json").read_text())
    rows = {r["label"]: r for r in report["rows"]}
    # beside the student's files, the teacher itself int8: what quantization alone keeps
    assert list(rows) == ["teacher-onnx-fp32", "teacher-onnx-int8"] + [f"{f}-int8" for f in FORMATS]
    # the teacher's own file finds exactly the teacher's neighbours: the reference rows line up with the file's
    assert rows["teacher-onnx-fp32"]["recall_at_10"] == pytest.approx(1.0)
    assert rows["teacher-onnx-fp32"]["cosine_to_torch_min"] > 0.9999
    for label, r in rows.items():
        assert r["dim"] == 32 and 0 <= r["recall_at_10"] <= 1 and r["p50_ms"] > 0 and r["file_mb"] > 0
        assert r["cosine_to_torch_min"] > 0.98, label
        assert label == "teacher-onnx-fp32" or (r["verified"] and r["vector_agreement_vs_torch"] == 1.0), label
        assert r["teacher_knn_label_accuracy"] == rows["teacher-onnx-fp32"]["knn_label_accuracy"]
        assert r["knn_domain_accuracy"] is not None and r["test_accuracy"] is None
        assert 0 <= r["index_binary_rescored_recall_at_10"] <= 1 and 0 <= r["index_int8_recall_at_10"] <= 1
        assert r["index_bytes_per_vector"] == {"float32": 128, "int8": 32, "binary": 4}
    # the teacher's own vectors in an int8 index still find (almost) all of its neighbours
    assert rows["teacher-onnx-fp32"]["index_int8_recall_at_10"] > 0.9
    assert report["best"] in rows
    pruned = json.loads((tmp_path / "runs" / "tinyembed" / "artifacts" / "2-prune" / "manifest.json").read_text())
    assert pruned["metrics"]["sparsity"] == pytest.approx(0.2, abs=0.01)
    assert "val_cosine_to_teacher" in pruned["metrics"] and "val_accuracy" not in pruned["metrics"]
    assert "test_cosine_to_teacher" in report["student"] and "test_accuracy" not in report["student"]
    md = (tmp_path / "runs" / "tinyembed" / "report.md").read_text()
    assert "recall@10 of teacher's neighbours" in md and "int8 / binary index" in md


PREDICT = """
import json, sys
from edgecompress.cli import main
code = main(["predict", *sys.argv[1:]])
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


def _predict(tmp_path, *argv):
    p = subprocess.run([sys.executable, "-c", PREDICT, *map(str, argv)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "EDGECOMPRESS_HOME": str(tmp_path / "home")})
    lines = [json.loads(ln) for ln in p.stdout.strip().splitlines()]
    assert lines[-1] == {"code": 0, "torch": False}, p.stderr[-2000:]
    return lines[:-1]


@pytest.mark.parametrize("fmt", ["onnx", "pte"])
def test_the_bundle_prints_vectors_and_ranks_a_corpus_without_torch(embed_run, fmt):
    # setup
    tmp_path, proc = embed_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    bundle = tmp_path / "runs" / "tinyembed" / "artifacts" / f"{fmt}-int8"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the film was wonderful\nthe film was wonderful\nbroken on arrival, avoid\n")
    # execute
    vectors = _predict(tmp_path, bundle, "the film was wonderful", "broken", "--json")
    ranked = _predict(tmp_path, bundle, "the film was wonderful", "--rank", corpus, "--top", "2", "--json")
    # assert: unit vectors of the io.json width; the query's own text ranks first with cosine 1
    io = json.loads((bundle / "io.json").read_text())
    assert io["output_name"] == "embedding" and io["num_labels"] == 32
    assert not (bundle / "labels.json").exists()
    assert [len(v["embedding"]) for v in vectors] == [32, 32]
    assert np.allclose([np.linalg.norm(v["embedding"]) for v in vectors], 1.0, atol=1e-3)
    hits = ranked[0]["results"]
    assert [h["line"] for h in hits] == [1, 2] and hits[0]["score"] == pytest.approx(1.0, abs=2e-3)


def test_rank_on_a_classifier_bundle_is_refused(tmp_path):
    # setup
    from argparse import Namespace
    from edgecompress.errors import UserInputError
    from edgecompress.export.iospec import IOSpec
    from edgecompress.predict import rank_corpus
    corpus = tmp_path / "c.txt"
    corpus.write_text("a line\n")
    args = Namespace(rank=corpus, artifact=tmp_path, threads=1, top=10)
    # execute / assert
    with pytest.raises(UserInputError, match="is a classifier"):
        rank_corpus(args, IOSpec(vocab_size=10, num_labels=2, max_seq_len=8), 1)
    assert rank_corpus(args, IOSpec(vocab_size=10, num_labels=32, max_seq_len=8, output_name="embedding"), 1) == ["a line"]


@pytest.mark.parametrize("fmt", ["onnx", "pte"])
def test_verify_on_a_target_compares_an_embedding_files_vectors(embed_run, capsys, fmt):
    # setup
    from edgecompress.cli import main
    tmp_path, proc = embed_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    export = tmp_path / "runs" / "tinyembed" / "artifacts" / f"{fmt}-int8"
    # execute: the local target runs the file through the on-device runner (the .pte through the native one)
    code = main(["verify", str(export), "--target", "local", "--limit", "12"])
    # assert: the runner's vectors are the host runtime's; torch's within int8's reach
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["ok"] and res["n"] == 12, res
    assert res["agreement_host_runtime"] == 1.0 and res["cosine_host_runtime_min"] > 0.999
    assert res["recall_at_10_host_runtime"] == pytest.approx(1.0) and res["agreement_host_torch"] == 1.0
    assert "accuracy_target" not in res


def test_a_run_on_unlabelled_text_reports_retrieval_without_label_probes(tmp_path):
    # setup: one sentence a line, no labels, no domains
    texts = corpus_texts(240)
    data = tmp_path / "txt"
    data.mkdir()
    for i, split in enumerate(("train", "validation", "test")):
        (data / f"{split}.txt").write_text("\n".join(texts[i::3]) + "\n", encoding="utf-8")
    recipe = {"name": "txt", "task": "embedding",
              "teacher": {"source": str(save_tiny_embedder(tmp_path / "t", "bert", texts=texts)), "finetune": None},
              "data": {"source": str(data), "max_seq_len": 32},
              "stages": [{"kind": "distill", "student": {"from_teacher_layers": [0]}, "train": {"epochs": 1}}],
              "export": {"formats": ["onnx"], "precisions": ["fp32"], "max_seq_len": 32,
                         "parity_shapes": [[1, 17], [3, 29]]},
              "bench": {"threads": 1, "seq_len": 16, "warmup_runs": 1, "runs": 3}}
    # execute
    proc = run_recipe(tmp_path, recipe, "--quiet", timeout=600)
    # assert
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "runs" / "txt" / "report.json").read_text())["rows"]
    assert [r["label"] for r in rows] == ["teacher-onnx-fp32", "onnx-fp32"]
    assert rows[0]["recall_at_10"] == pytest.approx(1.0) and 0 <= rows[1]["recall_at_10"] <= 1
    assert all(r.get("knn_label_accuracy") is None and r.get("knn_domain_accuracy") is None for r in rows)
