"""`edgecompress predict BUNDLE "text" ...`: labels and scores from an export bundle, the way an app would get them.

The text is tokenized here with the bundle's tokenizer.json (the `tokenizers` library), and the model file runs in its
own runtime through the same runner as `bench` (the native runner for .pte, the Python agent otherwise), on this
machine or on a --target device. This process never imports torch: what it needs is what an app needs.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from edgecompress.errors import RuntimeFailure, UserInputError
from edgecompress.device.protocol import BenchSettings
from edgecompress.formats import FORMATS, RUNNERS, check_runner_option, default_runner

MAX_TEXTS = 100_000


def register(sub) -> None:
    p = sub.add_parser("predict", help="label texts with an export bundle (tokenizer + model), without torch")
    p.add_argument("artifact", type=Path, help="an export folder (runs/<recipe>/artifacts/<format>-<precision>)")
    p.add_argument("texts", nargs="*", help="texts to label")
    p.add_argument("--file", type=Path, help="a UTF-8 text file, one text per line")
    p.add_argument("--json", action="store_true", help="one JSON object per text on stdout")
    p.add_argument("--target", default="local", help="local | ssh://user@host | adb://SERIAL | qemu-arm64")
    p.add_argument("--runner", choices=RUNNERS, help="default: native where the format has one, else python")
    p.add_argument("--threads", type=int, default=BenchSettings().threads)
    p.add_argument("--rank", type=Path, metavar="FILE",
                   help="embedding bundles: rank the lines of FILE (UTF-8, one text a line) against each text")
    p.add_argument("--top", type=int, default=10, help="--rank: how many lines to print per query")
    p.set_defaults(func=predict_command)


def _texts(args) -> list[str]:
    texts = list(args.texts)
    if args.file is not None:
        try:
            texts += [ln.strip() for ln in args.file.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise UserInputError(f"--file {args.file}: cannot read as UTF-8 text ({e}); one text per line") from None
    if not texts:
        raise UserInputError("no text to label: give texts as arguments or --file texts.txt")
    if len(texts) > MAX_TEXTS:
        raise UserInputError(f"{len(texts)} texts; at most {MAX_TEXTS} per call: split the file")
    return texts


def _read_lines(path: Path, flag: str) -> list[str]:
    try:
        return [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"{flag} {path}: cannot read as UTF-8 text ({e}); one text per line") from None


def rank_corpus(args, io, n_texts: int) -> list[str]:
    """--rank's lines, embedded in the same call as the queries; refused on a classifier's bundle."""
    if args.rank is None:
        return []
    if io.output_name != "embedding":
        raise UserInputError(f"--rank ranks by sentence vectors; {args.artifact} is a classifier "
                             f"(output {io.output_name}): drop --rank or use an embedding bundle")
    from edgecompress.limits import check_bounds
    check_bounds({"threads": args.threads})
    if args.top < 1:
        raise UserInputError(f"--top {args.top}: must be >= 1")
    lines = _read_lines(args.rank, "--rank")
    if not lines:
        raise UserInputError(f"--rank {args.rank}: no lines to rank; one text per line")
    if n_texts + len(lines) > MAX_TEXTS:
        raise UserInputError(f"{n_texts + len(lines)} texts with --rank; at most {MAX_TEXTS} per call: split the file")
    return lines


def _print_vectors(args, texts: list[str], vecs: list, corpus: list[str], corpus_vecs: list) -> int:
    """An embedding bundle's answer: each text's vector, or with --rank the corpus lines nearest to each text."""
    from edgecompress.retrieval import rank
    for text, vec in zip(texts, vecs):
        if not corpus:
            if args.json:
                print(json.dumps({"text": text, "dim": len(vec), "embedding": [round(float(v), 7) for v in vec]}))
            else:
                print(f"{text}\t{' '.join(f'{float(v):.6f}' for v in vec)}")
            continue
        order, sims = rank(vec, corpus_vecs)
        hits = [{"rank": i + 1, "score": round(float(sc), 6), "line": int(j) + 1, "text": corpus[j]}
                for i, (j, sc) in enumerate(zip(order[:args.top], sims[:args.top]))]
        if args.json:
            print(json.dumps({"query": text, "results": hits}))
        else:
            print(f"# {text}")
            for h in hits:
                print(f"{h['rank']}\t{h['score']:.4f}\t{h['text']}")
    sys.stdout.flush()
    return 0


def softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def predict_command(args) -> int:
    from edgecompress.artifact import open_export
    from edgecompress.bench.on_target import predict_on_target
    from edgecompress.bundle import read_labels, read_tokenizer, samples
    from edgecompress.export.iospec import IOSpec
    from edgecompress.transports.base import make_transport
    from edgecompress.transports.targets import parse_target
    from edgecompress.limits import check_bounds
    check_bounds({"threads": args.threads})
    texts = _texts(args)
    exp = open_export(args.artifact)
    check_runner_option(exp.format, args.runner)
    io = IOSpec.read(exp.io_json)
    tok = read_tokenizer(exp, io)
    labels = read_labels(exp, io.num_labels)
    corpus = rank_corpus(args, io, len(texts))
    with make_transport(parse_target(args.target)) as t:
        res = predict_on_target(t, exp.model_file, exp.io_json, FORMATS[exp.format].runtime,
                                samples(tok, texts + corpus, io),
                                threads=args.threads, runner=args.runner or default_runner(exp.format))
    if not res.get("ok"):
        raise RuntimeFailure(f"predict on {args.target} failed: {res.get('error')}")
    if io.output_name == "embedding":
        return _print_vectors(args, texts, res["logits"][:len(texts)], corpus, res["logits"][len(texts):])
    for text, logits in zip(texts, res["logits"]):
        scores = softmax(logits)
        best = max(range(len(scores)), key=scores.__getitem__)
        if args.json:
            print(json.dumps({"text": text, "label": labels[best], "score": round(scores[best], 6),
                              "scores": {labels[i]: round(s, 6) for i, s in enumerate(scores)}}))
        else:
            print(f"{labels[best]}\t{scores[best]:.4f}\t{text}")
    sys.stdout.flush()
    return 0
