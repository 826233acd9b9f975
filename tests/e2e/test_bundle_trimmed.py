"""A bundle after vocabulary trimming carries the trimmed tokenizer: predict gives the torch student's labels."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from edgecompress.zoo import save_tiny_teacher, write_small_vader


def test_trimmed_vocabulary_bundle_round_trip(tmp_path):
    # setup: distil, then trim the vocabulary to the train corpus; export onnx int8
    recipe = {"name": "trimmed",
              "teacher": {"source": str(save_tiny_teacher(tmp_path / "teacher")),
                          "finetune": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 16}},
              "data": {"source": str(write_small_vader(tmp_path / "data")), "max_seq_len": 64},
              "stages": [{"kind": "distill", "student": {"from_teacher_layers": [1]},
                          "train": {"epochs": 1, "learning_rate": 2e-3, "batch_size": 16}},
                         {"kind": "trim_vocab", "min_count": 1}],
              "export": {"formats": ["onnx"], "precisions": ["int8"], "max_seq_len": 64},
              "bench": {"threads": 1, "seq_len": 32, "warmup_runs": 1, "runs": 3}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "EDGECOMPRESS_HOME": str(tmp_path / "home")}
    run = subprocess.run([sys.executable, "-m", "edgecompress", "run", str(tmp_path / "r.yaml"), "--out",
                          str(tmp_path / "runs"), "--quiet"], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    arts = tmp_path / "runs" / "trimmed" / "artifacts"
    texts = json.loads(json.dumps(__import__("edgecompress.zoo", fromlist=["x"]).small_vader()["test"].texts[:40]))
    (tmp_path / "texts.txt").write_text("\n".join(t.replace("\n", " ") for t in texts))
    # execute
    p = subprocess.run([sys.executable, "-m", "edgecompress", "predict", str(arts / "onnx-int8"), "--file",
                        str(tmp_path / "texts.txt"), "--json"], capture_output=True, text=True, env=env, timeout=300)
    # assert: same labels as the torch student read through its own (trimmed) tokenizer
    assert p.returncode == 0, p.stderr[-2000:]
    got = [json.loads(ln)["label"] for ln in p.stdout.strip().splitlines()]
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    student = AutoModelForSequenceClassification.from_pretrained(str(arts / "2-trim_vocab" / "model")).eval()
    tok = AutoTokenizer.from_pretrained(str(arts / "2-trim_vocab" / "model"))
    labels = json.loads((arts / "onnx-int8" / "labels.json").read_text())["labels"]
    with torch.no_grad():
        ref = [labels[int(student(**tok(t, truncation=True, max_length=64, return_tensors="pt",
                                        return_token_type_ids=False)).logits.argmax(-1))] for t in texts]
    assert tok.vocab_size < 30522  # the table really was trimmed
    assert sum(a == b for a, b in zip(got, ref)) / len(ref) >= 0.9
