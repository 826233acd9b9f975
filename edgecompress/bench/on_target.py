"""`edgecompress verify`: does an exported file give the same labels (a sentence encoder: the same vectors) on a
target as on this host?

The packaged test split is tokenized here, pushed as one samples file, and run once through the on-device runner
(run_agent with --predict); the same file then runs in the same runtime on the host, and, when the artifact's parent
model folder is beside it in the store, in torch. Int8 kernels differ by CPU (NEON vs VNNI/AVX2), so agreement is
the number that says an x86-verified file is still right on an arm64 board.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from edgecompress.artifact import ExportFiles, open_export
from edgecompress.device.protocol import AgentRequest, BenchSettings, failure
from edgecompress.device.run import run_agent
from edgecompress.errors import UserInputError
from edgecompress.export.iospec import IOSpec
from edgecompress.formats import FORMATS, RUNNERS, check_runner_option, default_runner


def predict_on_target(transport, model_file: Path, io_json: Path, runtime: str, samples: list[dict], *,
                      threads: int = 1, timeout_s: float = 3600, runner: str = "python") -> dict:
    """Run every sample ({input_name: [[ids]]}) once on the target; the runner's dict with "predictions" (argmax
    per row, in sample order) and "logits", or a failure dict."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgecompress-predict-") as tmp:
        inputs = Path(tmp) / "inputs.json"
        inputs.write_text(json.dumps(samples, separators=(",", ":")))
        once = BenchSettings(threads=threads, warmup_runs=0, runs=1, timeout_s=timeout_s)
        request = AgentRequest(Path(model_file), Path(io_json), runtime, once, inputs_json=inputs, predict=True)
        res = run_agent(transport, request, timeout_s, runner=runner)
    if res.get("ok") and len(res.get("predictions") or []) != len(samples):
        return failure(f"the runner returned {len(res.get('predictions') or [])} predictions for {len(samples)} "
                       f"samples", "agent", transport.describe(), t0)
    return res


def label_agreement(a: list[int], b: list[int]) -> float:
    if len(a) != len(b) or not a:
        raise ValueError(f"cannot compare {len(a)} labels with {len(b)}")
    return sum(x == y for x, y in zip(a, b)) / len(a)


def tokenized_samples(tokenizer, texts: list[str], io: IOSpec) -> list[dict]:
    """One batch-of-one sample per text, unpadded (the true length: no [PAD] rows to emulate), truncated to the
    exported sequence bound."""
    enc = tokenizer(list(texts), truncation=True, max_length=io.max_seq_len, padding=False)
    return [{n: [list(enc[n][i]) if n in enc else [0] * len(enc["input_ids"][i])] for n in io.input_names}
            for i in range(len(texts))]


def _host_logits(exp: ExportFiles, samples: list[dict], threads: int) -> list[np.ndarray]:
    from edgecompress.registry import EXPORTERS
    infer = EXPORTERS.get(exp.format)().load(exp.model_file, threads=threads)
    return [np.asarray(infer({k: np.asarray(v, dtype=np.int64) for k, v in s.items()
                              if k in ("input_ids", "attention_mask")}))[0] for s in samples]


def _torch_rows(model, samples: list[dict]) -> np.ndarray:
    """The torch model's output row (logits or vector) for each batch-of-one sample, [samples, width]."""
    import torch
    with torch.no_grad():
        return np.stack([model.eval()(input_ids=torch.tensor(s["input_ids"]),
                                      attention_mask=torch.tensor(s["attention_mask"])).logits[0].numpy()
                         for s in samples])


def _torch_labels(model_dir: Path, samples: list[dict], num_labels: int) -> list[int]:
    from edgecompress.modeling import load_classifier
    return [int(r) for r in _torch_rows(load_classifier(model_dir, num_labels), samples).argmax(-1)]


def verify_labels(exp: ExportFiles, transport, *, threads: int = 1, limit: Optional[int] = None,
                  timeout_s: float = 3600, runner: Optional[str] = None) -> dict:
    """Predict the packaged test split on `transport` and on this host; report, for a classifier, label agreement
    with the same file in the same runtime on the host, with the torch model it was exported from, and with the
    gold labels; for a sentence encoder (output `embedding`), the share of vectors that agree (cosine >=
    retrieval.AGREEING_COSINE) with the host runtime's and torch's, and recall@10 of the host file's neighbours."""
    from edgecompress.data import load_splits
    from edgecompress.modeling import load_tokenizer
    from edgecompress.recipe import DataCfg

    model_dir = exp.parent_model_dir()
    if model_dir is None:
        raise UserInputError(f"{exp.artifact.path}: the model folder it was exported from is not beside it (its "
                             f"tokenizer made the ids the file expects); verify the export inside its store, e.g. "
                             f"runs/<recipe>/artifacts/{exp.key}")
    io = IOSpec.read(exp.io_json)
    test = load_splits(DataCfg())["test"]
    texts, gold = list(test.texts)[:limit], [int(x) for x in test.labels][:limit]
    samples = tokenized_samples(load_tokenizer(model_dir), texts, io)
    runtime = FORMATS[exp.format].runtime
    t0 = time.perf_counter()
    target = predict_on_target(transport, exp.model_file, exp.io_json, runtime, samples, threads=threads,
                               timeout_s=timeout_s, runner=runner or default_runner(exp.format))
    target_s = time.perf_counter() - t0
    if not target.get("ok"):
        return {"ok": False, "error": target.get("error"), "target": target}
    host_logits = _host_logits(exp, samples, threads)
    judged = (_vector_agreement(target["logits"], host_logits, _torch_vectors(model_dir, samples))
              if io.output_name == "embedding" else _label_agreement(target, host_logits, model_dir, samples, io, gold))
    return {"ok": True, "artifact_id": exp.artifact.id, "n": len(samples), "runtime": runtime,
            "runner": target.get("runner", "python"), "machine": target.get("machine"),
            "emulated": target.get("emulated"), "emulator": target.get("emulator"),
            "runtime_version": target.get("runtime_version"), "transport": target.get("transport"),
            **judged, "target_s": round(target_s, 1), "target_predict_s": target.get("predict_s")}


def _label_agreement(target: dict, host_logits: list, model_dir: Path, samples: list[dict], io: IOSpec,
                     gold: list[int]) -> dict:
    preds = target["predictions"]
    host = [int(np.argmax(r)) for r in host_logits]
    ref = _torch_labels(model_dir, samples, io.num_labels)
    return {"agreement_host_runtime": round(label_agreement(preds, host), 4),
            "max_abs_logit_diff_host_runtime": round(float(max(np.max(np.abs(np.asarray(a) - b))
                                                             for a, b in zip(target["logits"], host_logits))), 6),
            "accuracy_target": round(label_agreement(preds, gold), 4),
            "accuracy_host_runtime": round(label_agreement(host, gold), 4),
            "agreement_host_torch": round(label_agreement(preds, ref), 4),
            "host_torch_vs_host_runtime": round(label_agreement(host, ref), 4),
            "accuracy_host_torch": round(label_agreement(ref, gold), 4)}


def _torch_vectors(model_dir: Path, samples: list[dict]) -> np.ndarray:
    from edgecompress.embedding import load_embedder
    return _torch_rows(load_embedder(model_dir), samples)


def _vector_agreement(target_rows: list, host_rows: list, torch_rows: np.ndarray) -> dict:
    """A sentence encoder's vectors on the target beside the host runtime's and torch's: the share of rows that
    agree (the exit code reads agreement_host_runtime, as a classifier's label agreement), the cosines, and how many
    of the host file's ten nearest test sentences the target file finds."""
    from edgecompress.retrieval import agreeing, recall_at_k, row_cosine
    target, host = np.asarray(target_rows, dtype=np.float32), np.stack(host_rows).astype(np.float32)
    cos, to_torch = row_cosine(target, host), row_cosine(target, torch_rows)
    return {"agreement_host_runtime": round(agreeing(cos), 4),
            "cosine_host_runtime_mean": round(float(cos.mean()), 6),
            "cosine_host_runtime_min": round(float(cos.min()), 6),
            "agreement_host_torch": round(agreeing(to_torch), 4),
            "cosine_host_torch_mean": round(float(to_torch.mean()), 6),
            "recall_at_10_host_runtime": round(recall_at_k(target, host, 10), 4) if len(target) > 10 else None}


def register(sub) -> None:
    v = sub.add_parser("verify", help="label (sentence encoder: vector) agreement of an export artifact on a target "
                                      "(default: emulated arm64) vs this host")
    v.add_argument("artifact", type=Path, help="an export artifact folder (manifest.json + model file + io.json)")
    v.add_argument("--target", default="qemu-arm64", help="qemu-arm64[?cpu=...] or any target URL (ssh://, adb://)")
    v.add_argument("--limit", type=int, help="first N test samples only")
    v.add_argument("--threads", type=int, default=BenchSettings().threads)
    v.add_argument("--min-agreement", type=float, default=0.99)
    v.add_argument("--timeout-s", type=float, default=3600, help="for the whole prediction run on the target")
    v.add_argument("--runner", choices=RUNNERS, help="default: native where the format has one, else python")
    v.set_defaults(func=verify_command)


def verify_command(args) -> int:
    """One JSON object on stdout. Exit 0 when agreement >= --min-agreement, 1 below it, 3 when the target failed."""
    from edgecompress.transports.base import make_transport
    from edgecompress.transports.targets import parse_target
    if args.limit is not None and args.limit < 1:
        raise UserInputError(f"--limit must be >= 1 (got {args.limit}); omit it to verify the whole test split")
    from edgecompress.limits import check_bounds
    check_bounds({"threads": args.threads, "timeout_s": args.timeout_s})
    if not 0 <= args.min_agreement <= 1:
        raise UserInputError("--min-agreement must be within [0, 1]")
    exp = open_export(args.artifact)
    check_runner_option(exp.format, args.runner)
    with make_transport(parse_target(args.target)) as t:
        res = verify_labels(exp, t, threads=args.threads, limit=args.limit, timeout_s=args.timeout_s,
                            runner=args.runner)
    print(json.dumps(res, indent=2))
    if not res.get("ok"):
        return 3
    return 0 if res["agreement_host_runtime"] >= args.min_agreement else 1
