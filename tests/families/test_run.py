"""`edgecompress run` end to end on a user's model folder of another family: plan accepts it, every step runs, and
the onnx and pte int8 bundles agree with the torch student."""
from __future__ import annotations

import json

import pytest

from tests._cli import run_recipe


@pytest.mark.slow
@pytest.mark.parametrize("family", ["roberta", "deberta-v2"])
def test_run_a_non_bert_teacher_to_onnx_and_pte_int8(zoo, family, tmp_path):
    # setup: the zoo's folder is what save_pretrained() leaves, with a tokenizer of the family's kind
    from edgecompress.zoo import write_small_vader
    recipe = {"name": family, "teacher": {"source": str(zoo.folder(family)),
                                          "finetune": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 16}},
              "data": {"source": str(write_small_vader(tmp_path / "data", n_train=160, n_eval=64)),
                       "max_seq_len": 64},
              "stages": [{"kind": "distill", "student": {"config": {"num_hidden_layers": 1, "hidden_size": 16,
                                                                    "intermediate_size": 20}},
                          "train": {"epochs": 1, "learning_rate": 2e-3, "batch_size": 16}},
                         {"kind": "trim_vocab"}],
              "export": {"formats": ["onnx", "pte"], "precisions": ["int8"], "max_seq_len": 64},
              "bench": {"threads": 1, "seq_len": 32, "warmup_runs": 1, "runs": 3}}
    # execute
    p = run_recipe(tmp_path, recipe, "--json")
    # assert
    assert p.returncode == 0, p.stderr[-3000:]
    rows = {r["label"]: r for r in json.loads(p.stdout)["rows"]}
    for label in ("onnx-int8", "pte-int8"):
        assert rows[label]["label_agreement_vs_torch"] >= 0.9, rows[label]
        assert (tmp_path / "runs" / family / "artifacts" / label / "tokenizer.json").is_file()
