"""The peer path on the same teacher, side by side with an edgecompress file, in one process.

Peer: sentence-transformers' own ONNX backend export of the packaged MiniLM, then its
`export_dynamic_quantized_onnx_model(model, "avx2", ...)` (optimum's ORTQuantizer, dynamic int8). Both the peer file
and the edgecompress export folder given are judged the same way on the held-out VADER test split: recall@10 of the
teacher's (torch, sentence-transformers) ten nearest neighbours, kNN@10 sentiment/domain accuracy, file size, and
onnxruntime p50 at batch 1, seq 128, 1 thread, the two sessions timed interleaved (the CPU is shared).

    python benchmarks/embeddings/peer.py OUT/embed/artifacts/teacher-onnx-int8 OUT/embed/artifacts/onnx-int8
    # writes peer_results.{json,md}
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch/onnxruntime load libgomp

import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent


def session(path: Path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def run(sess, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    out = sess.run(None, {i.name: feed[i.name] for i in sess.get_inputs()})
    names = [o.name for o in sess.get_outputs()]
    vec = out[names.index("sentence_embedding")] if "sentence_embedding" in names else out[0]
    if vec.ndim == 3:  # the peer's token states: its Pooling + Normalize run outside the file
        m = mask[..., None].astype(np.float32)
        vec = (vec * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        vec = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    return vec


def vectors(sess, tok, texts: list[str]) -> np.ndarray:
    out = []
    for i in range(0, len(texts), 64):
        enc = tok(texts[i:i + 64], padding=True, truncation=True, max_length=128, return_tensors="np")
        out.append(run(sess, enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)))
    return np.concatenate(out)


def p50s(sessions: dict, runs: int = 50) -> dict:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(1, 128), dtype=np.int64)
    mask = np.ones_like(ids)
    times = {k: [] for k in sessions}
    for r in range(runs + 5):
        for k in sorted(sessions, key=lambda _: rng.random()):  # interleaved, shuffled order per round
            ids_k = ids % sessions[k][1]  # each file's own vocabulary bound (a trimmed one is smaller)
            t0 = time.perf_counter()
            run(sessions[k][0], ids_k, mask)
            if r >= 5:
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def bundle_tokenizer(bundle: Path, io: dict):
    """The export bundle's own tokenizer.json (trimmed ids), as an app would read it."""
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast(tokenizer_file=str(bundle / "tokenizer.json"))
    tok.pad_token = tok.convert_ids_to_tokens(io["pad_token_id"])
    return tok


def main() -> int:
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model
    from edgecompress.data import load_splits
    from edgecompress.modeling import load_tokenizer
    from edgecompress.recipe import DataCfg
    from edgecompress.retrieval import knn_accuracy, recall_at_k
    from edgecompress.zoo import minilm_dir
    ours_all = [Path(a) for a in sys.argv[1:]]
    test = load_splits(DataCfg())["test"]
    teacher = SentenceTransformer(str(minilm_dir()), device="cpu").encode(test.texts, batch_size=64)
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "minilm"
        shutil.copytree(minilm_dir(), folder)
        peer_st = SentenceTransformer(str(folder), backend="onnx", device="cpu", model_kwargs={"export": True})
        export_dynamic_quantized_onnx_model(peer_st, "avx2", str(folder))
        peer_file = folder / "onnx" / "model_quint8_avx2.onnx"
        files = {"peer: sentence-transformers dynamic int8 (avx2)": (peer_file, load_tokenizer(minilm_dir()), 30522)}
        for ours in ours_all:
            io = json.loads((ours / "io.json").read_text())
            files[f"edgecompress {ours.name}"] = (ours / "model.onnx", bundle_tokenizer(ours, io), io["vocab_size"])
        rows, sessions = [], {}
        for name, (path, tok, vocab) in files.items():
            sess = session(path)
            sessions[name] = (sess, vocab)
            vecs = vectors(sess, tok, test.texts)
            rows.append({"file": name, "recall_at_10": recall_at_k(vecs, teacher, 10),
                         "knn_label": knn_accuracy(vecs, test.labels), "knn_domain": knn_accuracy(vecs, test.domains),
                         "file_mb": round(path.stat().st_size / 2**20, 2)})
        lat = p50s(sessions)
    for r in rows:
        r["p50_ms"] = round(lat[r["file"]], 2)
    teacher_row = {"file": "teacher (torch, sentence-transformers)", "recall_at_10": 1.0,
                   "knn_label": knn_accuracy(teacher, test.labels), "knn_domain": knn_accuracy(teacher, test.domains)}
    table = [teacher_row, *rows]
    (HERE / "peer_results.json").write_text(json.dumps(table, indent=2))
    md = ["| file | recall@10 | kNN sentiment | kNN domain | p50 ms | MiB |", "|---|---|---|---|---|---|"]
    md += [f"| {r['file']} | {r['recall_at_10']:.3f} | {r['knn_label']:.3f} | {r['knn_domain']:.3f} | "
           f"{r.get('p50_ms', '—')} | {r.get('file_mb', '—')} |" for r in table]
    (HERE / "peer_results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
