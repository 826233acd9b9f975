"""Bring your own encoder, the multilingual case: an XLM-R-shaped teacher whose embedding table is the full-size
250,002-row vocabulary, trimmed to what the user's corpus uses and exported to ONNX int8.

Steps (each one the product's own code; the numbers land in results.json / results.md):
1. Tokenizer: a SentencePiece Unigram model trained with the `tokenizers` library on the packaged VADER train split
   (--english-pieces learned pieces, the five XLM-R specials first), extended to 250,002 pieces with synthetic
   pieces in 16 non-Latin scripts (README.md says why and how). Adding them changes no VADER segmentation: checked
   on every train/validation/test text before anything else runs.
2. Teacher: XLMRobertaConfig(vocab_size=250002, hidden 256, 4 layers, 4 heads, FFN 1024), random-initialised and
   fine-tuned on the VADER train split with compress.finetune (the pipeline's teacher step).
3. Untrimmed: EXPORTERS["onnx"] int8 (QuantSpec() defaults: dynamic, per channel, int8 embedding Gather); test
   accuracy of the file in onnxruntime (the exporter's load()).
4. Trimmed: STAGES["trim_vocab"] with min_count 1 on the train split (--recovery adds its KD fine-tune), then the
   same export and the same onnxruntime accuracy.
5. Sensitivity (sizes only, no training): how many rows trim_vocab keeps, and the trimmed int8 file's MiB, when the
   learned share of the vocabulary is smaller or larger (--sweep), with the product's trimming functions and exporter.

Reproduce:  python benchmarks/multilingual/run.py                 (~8 min on 2 shared cores, 1 torch thread)
            python benchmarks/multilingual/run.py --smoke         (tiny teacher, 200 rows, ~2 min: checks the script)
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch/onnxruntime load libgomp (DESIGN.md: threads)
os.environ.setdefault("RAYON_NUM_THREADS", "1")     # the tokenizers trainer: one core, like torch
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import unicodedata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.multilingual.render import to_markdown  # noqa: E402

SEQ = 64            # max_seq_len of training, trimming and export (VADER sentences are ~25 pieces)
FULL_VOCAB = 250_002  # XLM-R's vocabulary size (250,000 SentencePiece pieces + <mask> + the fairseq offset)
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
TEACHER = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)

# Synthetic pieces: scripts XLM-R's CC-100 languages use and VADER does not (VADER's non-ASCII characters are 18
# Latin letters and punctuation), so no synthetic piece can match a VADER text. name -> (code point ranges, weight).
SCRIPTS = {
    "cjk": ([(0x4E00, 0x9FFF)], 6), "hangul": ([(0xAC00, 0xD7A3)], 4), "cyrillic": ([(0x0430, 0x044F)], 4),
    "arabic": ([(0x0627, 0x064A)], 3), "devanagari": ([(0x0915, 0x0939), (0x093E, 0x094C)], 3),
    "greek": ([(0x03B1, 0x03C9)], 2), "hebrew": ([(0x05D0, 0x05EA)], 2), "thai": ([(0x0E01, 0x0E2E)], 2),
    "bengali": ([(0x0995, 0x09B9), (0x09BE, 0x09CC)], 2), "tamil": ([(0x0B95, 0x0BB9), (0x0BBE, 0x0BCC)], 2),
    "georgian": ([(0x10D0, 0x10FA)], 1), "armenian": ([(0x0561, 0x0586)], 1), "hiragana": ([(0x3041, 0x3096)], 2),
    "katakana": ([(0x30A1, 0x30FA)], 2), "ethiopic": ([(0x1200, 0x1248)], 1), "gujarati": ([(0x0A95, 0x0AB9)], 1),
}
WORD_START = "\u2581"  # SentencePiece's word-start marker


def synthetic_pieces(n: int, taken: set[str], seed: int = 0) -> list[str]:
    """n distinct pieces, 1-6 characters of one script each, half of them word-initial (WORD_START-prefixed) as in
    a real SentencePiece vocabulary; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    names = list(SCRIPTS)
    weights = np.array([SCRIPTS[s][1] for s in names], dtype=float)
    alphabets = [np.array([c for lo, hi in SCRIPTS[s][0] for c in range(lo, hi + 1)
                           if unicodedata.category(chr(c)) != "Cn"]) for s in names]  # assigned characters only
    out, seen = [], set(taken)
    while len(out) < n:  # drawn in blocks (a per-piece loop of rng calls took 15 s for 242k pieces)
        block = 2 * (n - len(out)) + 64
        scripts = rng.choice(len(names), size=block, p=weights / weights.sum())
        lengths = rng.integers(1, 7, size=block)
        starts = rng.random(block) < 0.5
        picks = rng.random((block, 6))
        for s, k, st, u in zip(scripts, lengths, starts, picks):
            a = alphabets[s]
            piece = (WORD_START if st else "") + "".join(chr(a[int(x * len(a))]) for x in u[:k])
            if piece not in seen:
                seen.add(piece)
                out.append(piece)
                if len(out) == n:
                    break
    return out


def build_tokenizer(texts: list[str], english_pieces: int, full_vocab: int = FULL_VOCAB, seed: int = 0):
    """XLMRobertaTokenizerFast over a Unigram model: `english_pieces` pieces learned from `texts` (specials included)
    + synthetic pieces up to `full_vocab`, scored inside the learned pieces' score range. Returns (tokenizer, info)."""
    from tokenizers import SentencePieceUnigramTokenizer, Tokenizer, processors
    from transformers import XLMRobertaTokenizerFast

    raw = SentencePieceUnigramTokenizer()
    raw.train_from_iterator(texts, vocab_size=english_pieces, special_tokens=SPECIALS, unk_token="<unk>",
                            show_progress=False)
    raw.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    spec = json.loads(raw._tokenizer.to_str())
    learned = spec["model"]["vocab"]
    scores = np.array([s for p, s in learned if p not in SPECIALS])
    rng = np.random.default_rng(seed + 1)
    extra = synthetic_pieces(full_vocab - len(learned), {p for p, _ in learned}, seed)
    # Scores drawn from the learned pieces' own range: they look like real pieces to the Unigram model (and the
    # minimum score, which sets the unknown-piece penalty, stays a learned piece's or one inside that range).
    extra_scores = rng.uniform(float(scores.min()), float(np.median(scores)), size=len(extra))
    spec["model"]["vocab"] = learned + [[p, float(s)] for p, s in zip(extra, extra_scores)]
    tok = XLMRobertaTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token="<s>",
                                  eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                                  pad_token="<pad>", mask_token="<mask>")
    small = XLMRobertaTokenizerFast(tokenizer_object=raw._tokenizer, bos_token="<s>", eos_token="</s>",
                                    sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                    mask_token="<mask>")
    info = {"learned_pieces": len(learned), "synthetic_pieces": len(extra), "pieces": len(tok),
            "english_pieces_asked": english_pieces}
    return tok, small, info


def same_segmentation(tok, small, texts: list[str]) -> int:
    """Texts whose ids differ between the full tokenizer and the learned-only one (must be 0)."""
    a = tok(texts, add_special_tokens=True)["input_ids"]
    b = small(texts, add_special_tokens=True)["input_ids"]
    return sum(x != y for x, y in zip(a, b))


def onnx_int8(model, tok, out_dir: Path, test_batches) -> dict:
    """EXPORTERS["onnx"] int8 of `model`, then its accuracy on the test batches in onnxruntime (exporter.load)."""
    from edgecompress.export.base import IOSpec
    from edgecompress.recipe import QuantSpec
    from edgecompress.registry import EXPORTERS

    io = IOSpec(vocab_size=len(tok), num_labels=2, max_seq_len=SEQ, pad_token_id=tok.pad_token_id)
    exporter = EXPORTERS.get("onnx")(batch=1)
    t0 = time.perf_counter()
    out = exporter.export(model, io, QuantSpec(), None, out_dir)
    export_s = time.perf_counter() - t0
    infer = exporter.load(out.file, threads=1)
    t1 = time.perf_counter()
    n = sum(len(y) for _, y, _ in test_batches)
    labels, pred = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for x, y, idx in test_batches:
        labels[idx], pred[idx] = y, np.asarray(infer(x)).argmax(-1)
    return {"file_mib": round(out.file.stat().st_size / 2**20, 3), "file_bytes": out.file.stat().st_size,
            "test_accuracy": round(float((pred == labels).mean()), 4), "export_s": round(export_s, 1),
            "eval_s": round(time.perf_counter() - t1, 1), "notes": out.notes, "_pred": pred}


def sweep(texts: list[str], english: list[int], seed: int) -> list[dict]:
    """Sizes only: for each learned share, the rows kept and the trimmed int8 file of an untrained teacher (file
    size does not depend on the weights' values), through the product's trimming functions and exporter."""
    import torch
    from edgecompress.compress.vocabulary import completed_ids, kept_ids, token_counts, trim_embeddings, trimmed_tokenizer
    from edgecompress.export.base import IOSpec
    from edgecompress.recipe import QuantSpec
    from edgecompress.registry import EXPORTERS
    from edgecompress.zoo import make_model

    rows = []
    for n in english:
        t0 = time.perf_counter()
        tok, _, info = build_tokenizer(texts, n, seed=seed)
        keep = completed_ids(tok, kept_ids(tok, token_counts(tok, texts), 1))
        model = make_model("xlm-roberta", tok, seed, hidden=TEACHER["hidden_size"], layers=TEACHER["num_hidden_layers"],
                           heads=TEACHER["num_attention_heads"], ffn=TEACHER["intermediate_size"], max_positions=SEQ)
        new_tok = trimmed_tokenizer(tok, keep)
        with torch.no_grad():
            trim_embeddings(model, keep, new_tok.pad_token_id)
        io = IOSpec(vocab_size=len(new_tok), num_labels=2, max_seq_len=SEQ, pad_token_id=new_tok.pad_token_id)
        with tempfile.TemporaryDirectory(prefix="multilingual-sweep.") as tmp:
            out = EXPORTERS.get("onnx")(batch=1).export(model, io, QuantSpec(), None, Path(tmp))
            mib = out.file.stat().st_size / 2**20
        rows.append({**info, "vocab_kept": len(keep), "trimmed_int8_mib": round(mib, 3),
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
        del model
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--english-pieces", type=int, default=8000,
                    help="Unigram pieces learned from VADER (it yields at most 19,955); the rest are synthetic")
    ap.add_argument("--teacher-rows", type=int, default=4000, help="train rows the teacher is fine-tuned on")
    ap.add_argument("--teacher-epochs", type=float, default=2.0)
    ap.add_argument("--recovery-rows", type=int, default=0,
                    help="rows of trim_vocab's KD recovery fine-tune (0: no recovery)")
    ap.add_argument("--sweep", default="4000,12000,16000,19955",
                    help="learned-piece counts for the sizes-only sensitivity table ('' to skip)")
    ap.add_argument("--smoke", action="store_true", help="tiny teacher, 200 rows: checks the script, measures little")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results"), help="writes <out>.json and <out>.md")
    ap.add_argument("--render", action="store_true", help="only rewrite <out>.md from <out>.json")
    return ap.parse_args(argv)


def save(res: dict, out: str) -> None:
    Path(f"{out}.json").write_text(json.dumps(res, indent=2) + "\n")
    Path(f"{out}.md").write_text(to_markdown(res))


def setup(args: argparse.Namespace, argv) -> tuple:
    """The splits and teacher size (shrunk by --smoke, which also shrinks args' teacher training and sweep), the
    StageContext and the results dict with its meta. Returns (splits, teacher_size, ctx, res)."""
    import torch
    import transformers
    from edgecompress.compress.base import StageContext
    from edgecompress.data import load_splits
    from edgecompress.recipe import DataCfg

    teacher_size = dict(TEACHER)
    splits = load_splits(DataCfg())
    if args.smoke:
        teacher_size = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
        splits = {"train": splits["train"], "validation": splits["validation"].subset(128),
                  "test": splits["test"].subset(128)}
        args.teacher_rows, args.teacher_epochs, args.sweep = 200, 1.0, ""
    ctx = StageContext(splits, SEQ, args.seed)
    res = {"command": "python benchmarks/multilingual/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "meta": {"machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)", "torch": torch.__version__,
                    "transformers": transformers.__version__, "torch_threads": torch.get_num_threads(),
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "seq": SEQ,
                    "splits": {k: len(v) for k, v in splits.items()}, "teacher_config": teacher_size,
                    "teacher_train": {"rows": args.teacher_rows, "epochs": args.teacher_epochs,
                                      "learning_rate": 5e-4, "batch_size": 32}}}
    return splits, teacher_size, ctx, res


def tokenizer_step(args: argparse.Namespace, splits: dict, res: dict):
    """Step 1: the 250k tokenizer, checked to segment every VADER text as the learned pieces alone do."""
    t0 = time.perf_counter()
    texts = splits["train"].texts
    tok, small, info = build_tokenizer(texts, args.english_pieces, seed=args.seed)
    all_texts = texts + splits["validation"].texts + splits["test"].texts
    info["texts_segmented_differently_by_synthetic_pieces"] = same_segmentation(tok, small, all_texts)
    if info["texts_segmented_differently_by_synthetic_pieces"]:
        raise SystemExit("synthetic pieces changed a VADER segmentation: pick scripts VADER does not use")
    info["seconds"] = round(time.perf_counter() - t0, 1)
    res["tokenizer"] = info
    print(json.dumps(info), flush=True)
    return tok


def teacher_step(args: argparse.Namespace, tok, teacher_size: dict, ctx, res: dict):
    """Step 2: the random-initialised teacher, fine-tuned with compress.finetune; returned in eval mode."""
    from edgecompress.compress.finetune import finetune
    from edgecompress.modeling import count_params
    from edgecompress.recipe import TrainCfg
    from edgecompress.zoo import make_model

    t0 = time.perf_counter()
    teacher = make_model("xlm-roberta", tok, args.seed, hidden=teacher_size["hidden_size"],
                         layers=teacher_size["num_hidden_layers"], heads=teacher_size["num_attention_heads"],
                         ffn=teacher_size["intermediate_size"], max_positions=SEQ)
    ft = finetune(teacher, tok, TrainCfg(epochs=args.teacher_epochs, learning_rate=5e-4, batch_size=32,
                                         max_train_samples=args.teacher_rows), ctx)
    teacher.eval()
    res["teacher"] = {"params": count_params(teacher),
                      "embedding_params": teacher.get_input_embeddings().weight.numel(),
                      "vocab_size": teacher.config.vocab_size, "test_accuracy": round(ft.metrics["test_accuracy"], 4),
                      "val_accuracy": round(ft.metrics["val_accuracy"], 4),
                      "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(res["teacher"]), flush=True)
    return teacher


def untrimmed_step(teacher, tok, ctx, out_dir: Path, res: dict) -> dict:
    """Step 3: the untrimmed teacher's int8 file and its onnxruntime test accuracy."""
    from edgecompress.data import EVAL_BATCH

    test = ctx.batches(tok, "test", EVAL_BATCH, shuffle=False)
    un = onnx_int8(teacher, tok, out_dir, test)
    res["untrimmed_int8"] = {k: v for k, v in un.items() if not k.startswith("_")}
    res["untrimmed_int8"]["vocab_size"] = len(tok)
    print(json.dumps(res["untrimmed_int8"]), flush=True)
    return un


def trim_step(args: argparse.Namespace, teacher, tok, ctx, res: dict):
    """Step 4: trim_vocab (the registered stage) on a copy, the teacher kept intact for the recovery's KD."""
    from edgecompress.compress.base import Teacher
    from edgecompress.recipe import TrainCfg, VocabTrimCfg
    from edgecompress.registry import STAGES

    t0 = time.perf_counter()
    recovery = (TrainCfg(epochs=1, learning_rate=2e-4, batch_size=32, max_train_samples=args.recovery_rows)
                if args.recovery_rows else None)
    cfg = VocabTrimCfg(corpus_splits=["train"], min_count=1, recovery=recovery)
    trimmed = STAGES.get("trim_vocab")(copy.deepcopy(teacher), tok, cfg, ctx, Teacher(teacher, tok))
    m = trimmed.metrics
    res["trim_vocab"] = {"vocab_size_before": m["vocab_size_before"], "vocab_size": m["vocab_size"],
                         "corpus_texts": m["corpus_texts"], "corpus_tokens": m["corpus_tokens"],
                         "min_count": m["min_count"], "recovery": recovery.model_dump() if recovery else None,
                         "params_before": m["params_before"], "params": m["params"],
                         "torch_test_accuracy": round(m["test_accuracy"], 4),
                         "seconds": round(time.perf_counter() - t0, 1)}
    if "val_accuracy_before_recovery" in m:
        res["trim_vocab"]["val_accuracy_before_recovery"] = round(m["val_accuracy_before_recovery"], 4)
    print(json.dumps(res["trim_vocab"]), flush=True)
    return trimmed


def trimmed_step(trimmed, ctx, out_dir: Path, un: dict, res: dict) -> dict:
    """Step 5: the trimmed int8 file on the same test rows, read with the trimmed tokenizer."""
    from edgecompress.data import EVAL_BATCH

    test_t = ctx.batches(trimmed.tokenizer, "test", EVAL_BATCH, shuffle=False)
    tr = onnx_int8(trimmed.model, trimmed.tokenizer, out_dir, test_t)
    res["trimmed_int8"] = {k: v for k, v in tr.items() if not k.startswith("_")}
    res["trimmed_int8"]["vocab_size"] = len(trimmed.tokenizer)
    agree = float((tr["_pred"] == un["_pred"]).mean())
    res["trimmed_int8"]["label_agreement_with_untrimmed_int8"] = round(agree, 4)
    print(json.dumps(res["trimmed_int8"]), flush=True)
    return tr


def compare_step(args: argparse.Namespace, teacher, tok, ctx, res: dict) -> None:
    """Steps 3-5: untrimmed int8, trim_vocab, trimmed int8, then res["result"]; saves after 3 and at the end."""
    with tempfile.TemporaryDirectory(prefix="multilingual-bench.") as tmp:
        un = untrimmed_step(teacher, tok, ctx, Path(tmp) / "untrimmed", res)
        save(res, args.out)
        trimmed = trim_step(args, teacher, tok, ctx, res)
        tr = trimmed_step(trimmed, ctx, Path(tmp) / "trimmed", un, res)
    res["result"] = {
        "size_ratio": round(un["file_bytes"] / tr["file_bytes"], 2),
        "accuracy_loss_points": round(100 * (un["test_accuracy"] - tr["test_accuracy"]), 2),
        "meets_target": bool(un["file_bytes"] >= 10 * tr["file_bytes"]
                             and un["test_accuracy"] - tr["test_accuracy"] <= 0.01)}
    save(res, args.out)


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    if args.render:
        Path(f"{args.out}.md").write_text(to_markdown(json.loads(Path(f"{args.out}.json").read_text())))
        return 0
    torch.set_num_threads(1)
    started = time.perf_counter()
    cpu0 = time.process_time()
    splits, teacher_size, ctx, res = setup(args, argv)

    tok = tokenizer_step(args, splits, res)
    teacher = teacher_step(args, tok, teacher_size, ctx, res)
    save(res, args.out)
    compare_step(args, teacher, tok, ctx, res)  # the trimmed model is freed when it returns
    del teacher

    # 6. sensitivity to the learned share (sizes only)
    english = [int(x) for x in args.sweep.split(",") if x]
    if english:
        res["sweep"] = sweep(splits["train"].texts, english, args.seed)
    res["meta"]["wall_s"] = round(time.perf_counter() - started, 1)
    res["meta"]["cpu_s"] = round(time.process_time() - cpu0, 1)
    save(res, args.out)
    print(json.dumps(res["result"]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
