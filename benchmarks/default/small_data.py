"""One distillation against a cached teacher, reported as the fp32 student's test accuracy: the probe behind the
small-data lines of README.md (each line is one run of this script; results append to small_data.jsonl).

    python benchmarks/default/small_data.py TEACHER_DIR DATA_DIR NAME '<DistillCfg as JSON>'

TEACHER_DIR: a teacher artifact's model folder ($EDGECOMPRESS_HOME/store/teacher-<id>/model, written by
`edgecompress run` on the same data); DATA_DIR: e.g. the 3k-row VADER folder run.py writes (small_vader()).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from edgecompress.compress.base import StageContext, Teacher
    from edgecompress.compress.distill import distill
    from edgecompress.compress.train import accuracy
    from edgecompress.data import load_splits
    from edgecompress.recipe import DataCfg, DistillCfg

    teacher_dir, data_src, name, cfg_json = sys.argv[1:5]
    torch.set_num_threads(2)
    t = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    ctx = StageContext(load_splits(DataCfg(source=data_src)), 128, seed=0)
    t0 = time.time()
    res = distill(t, tok, DistillCfg(**json.loads(cfg_json)), ctx, Teacher(t, tok))
    teacher_acc = accuracy(t, ctx.eval_batches(tok, "test"))
    out = {"name": name, "config": json.loads(cfg_json), "test": res.metrics["test_accuracy"],
           "teacher_test": teacher_acc, "of_teacher": res.metrics["test_accuracy"] / teacher_acc,
           "seconds": round(time.time() - t0), "vocab": res.metrics.get("vocab", {}).get("vocab_size")}
    print(json.dumps(out))
    with open(HERE / "small_data.jsonl", "a") as f:
        f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
