"""Bring your own encoder, per family: a small teacher of each supported family trained from scratch on the
packaged VADER train split (its own tokenizer of the family's kind, trained on the same split), distilled into a
narrower student through the same stage the pipeline runs, exported to ONNX int8 and judged in onnxruntime.

Per row: teacher / student (torch) / student onnx-int8 test accuracy (packaged VADER test split), the int8
student's share of the teacher, label agreement int8 vs torch student, params, file MiB, p50 ms (batch 1,
seq 64, 1 thread, OMP_WAIT_POLICY=PASSIVE), and the seconds each step took. Rows are saved to results.json as they
are measured (a killed run keeps them).

The teachers are random-initialised and trained briefly: this measures that every family goes through the stages
and the exporter with the accuracy it has, not how good a pretrained checkpoint of each family would be.

Reproduce:  python benchmarks/families/run.py                    (~3-4 min per family on 2 cores)
            python benchmarks/families/run.py --smoke            (tiny sizes, ~15 s per family)
            python benchmarks/families/run.py --families roberta,modernbert
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch/onnxruntime load libgomp (DESIGN.md: threads)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parents[1]))  # this checkout's package (edgecompress.zoo builds the models and tokenizers)
SEQ, THREADS = 64, 1

# (teacher size, student arch, rows, epochs): full = a few minutes per family on 2 cores; smoke = seconds.
SIZES = {
    "full": dict(teacher=dict(hidden=128, layers=4, heads=4, ffn=512), vocab=4000, train_rows=4000, eval_rows=None,
                 teacher_epochs=2, student=dict(num_hidden_layers=2, hidden_size=64, intermediate_size=256),
                 student_epochs=2),
    "smoke": dict(teacher=dict(hidden=32, layers=2, heads=4, ffn=64), vocab=1200, train_rows=400, eval_rows=128,
                  teacher_epochs=1, student=dict(num_hidden_layers=1, hidden_size=16, intermediate_size=32),
                  student_epochs=1),
}


def p50_ms(infer, io, runs: int = 30, warmup: int = 5) -> float:
    from edgecompress.bench.stats import in_process_p50_ms
    x = io.example_inputs(1, SEQ, seed=1)
    x["attention_mask"][:] = 1
    return round(in_process_p50_ms(infer, x, runs, warmup), 3)


def by_row(batches, values) -> np.ndarray:
    """Per-batch values put back in row order (each batch carries its row index), as predict_logits returns."""
    out = np.zeros(sum(len(y) for _, y, _ in batches), dtype=np.int64)
    for (_, _, idx), v in zip(batches, values):
        out[idx] = v
    return out


def run_family(family: str, size: dict, splits: dict) -> dict:
    """Teacher (fine-tuned from scratch) -> distilled student -> onnx int8; every number of one row."""
    import torch
    from edgecompress.compress.base import StageContext, Teacher
    from edgecompress.compress.distill import distill
    from edgecompress.compress.finetune import finetune
    from edgecompress.compress.train import predict_logits
    from edgecompress.data import EVAL_BATCH
    from edgecompress.export.base import IOSpec
    from edgecompress.modeling import count_params
    from edgecompress.recipe import DistillCfg, QuantSpec, StudentArchCfg, StudentCfg, TrainCfg
    from edgecompress.registry import EXPORTERS
    from edgecompress.zoo import make_model, make_tokenizer

    torch.set_num_threads(2)
    row, t0 = {"family": family}, time.perf_counter()
    tok = make_tokenizer(family, splits["train"].texts, size["vocab"])
    teacher = make_model(family, tok, **size["teacher"])
    ctx = StageContext(splits, SEQ)
    res = finetune(teacher, tok, TrainCfg(epochs=size["teacher_epochs"], learning_rate=5e-4, batch_size=32), ctx)
    row.update(teacher_params=count_params(teacher), teacher_test_accuracy=round(res.metrics["test_accuracy"], 4),
               teacher_s=round(time.perf_counter() - t0, 1))
    t1 = time.perf_counter()
    cfg = DistillCfg(student=StudentCfg(config=StudentArchCfg(**size["student"])),
                     train=TrainCfg(epochs=size["student_epochs"], learning_rate=1e-3, batch_size=32))
    student = distill(teacher, tok, cfg, ctx, Teacher(teacher.eval(), tok)).model.eval()
    test = ctx.batches(tok, "test", EVAL_BATCH, shuffle=False)
    labels = by_row(test, [y for _, y, _ in test])
    torch_pred = predict_logits(student, test).argmax(-1)
    row.update(student_params=count_params(student), student_test_accuracy=round(float((torch_pred == labels).mean()), 4),
               student_init=getattr(student, "init_report", {}).get("random_init"),
               distill_s=round(time.perf_counter() - t1, 1))
    t2 = time.perf_counter()
    io = IOSpec(vocab_size=len(tok), num_labels=2, max_seq_len=SEQ, pad_token_id=tok.pad_token_id)
    exporter = EXPORTERS.get("onnx")(batch=1)
    with tempfile.TemporaryDirectory(prefix="families-bench.") as tmp:
        out = exporter.export(student, io, QuantSpec(per_channel=True), None, Path(tmp))
        infer = exporter.load(out.file, threads=THREADS)
        pred = by_row(test, [np.asarray(infer(x)).argmax(-1) for x, _, _ in test])
        row.update(onnx_int8_test_accuracy=round(float((pred == labels).mean()), 4),
                   int8_vs_torch_label_agreement=round(float((pred == torch_pred).mean()), 4),
                   onnx_int8_file_mb=out.details["file_mb"], onnx_int8_p50_ms=p50_ms(infer, io),
                   export_s=round(time.perf_counter() - t2, 1))
    row["int8_share_of_teacher"] = round(row["onnx_int8_test_accuracy"] / max(row["teacher_test_accuracy"], 1e-9), 4)
    return row


def to_markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# Families: teacher -> distilled student -> onnx int8 ({meta['mode']})", "",
             f"{meta['machine']}; torch {meta['torch']}, transformers {meta['transformers']}; test rows "
             f"{meta['test_rows']}; p50 at batch 1, seq {SEQ}, {THREADS} thread.", "",
             "| family | teacher acc | student acc | int8 acc | int8 / teacher | int8 vs torch | params T -> S | "
             "file MiB | p50 ms | seconds (T / distill / export) |", "|---" * 10 + "|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['family']} | failed: {r['error']} |" + " |" * 8)
            continue
        lines.append(f"| {r['family']} | {r['teacher_test_accuracy']:.4f} | {r['student_test_accuracy']:.4f} | "
                     f"{r['onnx_int8_test_accuracy']:.4f} | {r['int8_share_of_teacher']:.3f} | "
                     f"{r['int8_vs_torch_label_agreement']:.3f} | {r['teacher_params']:,} -> {r['student_params']:,} | "
                     f"{r['onnx_int8_file_mb']} | {r['onnx_int8_p50_ms']} | {r['teacher_s']} / {r['distill_s']} / "
                     f"{r['export_s']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import torch
    import transformers
    from edgecompress.data import load_splits
    from edgecompress.families import FAMILY_NAMES
    from edgecompress.recipe import DataCfg

    ap = argparse.ArgumentParser()
    ap.add_argument("--families", default=",".join(FAMILY_NAMES))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and few rows: checks the script, measures little")
    ap.add_argument("--out", default=str(HERE / "results"), help="writes <out>.json and <out>.md")
    args = ap.parse_args(argv)
    mode = "smoke" if args.smoke else "full"
    size = SIZES[mode]
    s = load_splits(DataCfg())
    splits = {"train": s["train"].subset(size["train_rows"]), "validation": s["validation"].subset(size["eval_rows"]),
              "test": s["test"].subset(size["eval_rows"])}
    meta = {"mode": mode, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "torch": torch.__version__,
            "transformers": transformers.__version__, "test_rows": len(splits["test"]), "size": size,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    rows = []
    for family in filter(None, args.families.split(",")):
        try:
            rows.append(run_family(family, size, splits))
        except Exception as e:  # noqa: BLE001 - one family's failure is a row, the others still run
            rows.append({"family": family, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
        print(json.dumps(rows[-1]), flush=True)
        Path(f"{args.out}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        Path(f"{args.out}.md").write_text(to_markdown(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
