"""Which student and which trim buy the teacher's neighbours: a probe outside the pipeline, so one lever moves at a
time.

A student sliced from the packaged MiniLM's layers is trained toward the teacher's cached, normalised mean-pooled
vectors on VADER's train sentences (loss: 3 x (1 - cos), what `embedding.loss: both` is on unit vectors), AdamW with
linear warmup/decay as the pipeline's training loop; after each epoch, recall@10 of the teacher's neighbours and kNN
accuracies on the held-out test split, by the fp32 torch student (no export: those are the run's rows); after the
last epoch also by an int8 copy (4-bit table with a scale + zero point per --group values, per-channel dynamic int8
linears: the .pte's grid), as int8_*.

    python benchmarks/embeddings/levers.py NAME --layers 0,1,3,5 --epochs 2 [--lr 2e-4] [--trim-max 13000 | --trim-all |
        --alias 13000] [--rows 25000] [--bank-w 1.0] [--batch-size 16] [--group 64]
    python benchmarks/embeddings/levers.py --collect        # levers.json + the markdown table from the NAME.json files

--trim-max N / --trim-all: the student reads the train split's N most frequent tokens / all of them (the pipeline's
trim_to_corpus). --rows: the train text grown with masked/word-swapped variants (distill.augment). --bank-w: plus
KL between the student's and the teacher's softmax similarities to the teacher's train vectors (tau 0.05).
--alias N: not a pipeline option (a probe of the next lever): the student keeps the N most frequent train tokens'
rows, and every other token id reads the kept row nearest to its own teacher row (cosine; word-start and continuation
pieces apart), so text segments exactly as the teacher's. The table's rows are runs of this script; a row whose
"stopped_after" is set was cut short.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "levers"


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("name", nargs="?")
    p.add_argument("--collect", action="store_true")
    p.add_argument("--layers", default="0,2,4")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--trim-max", type=int, default=None)
    p.add_argument("--trim-all", action="store_true")
    p.add_argument("--rows", type=int, default=0)
    p.add_argument("--bank-w", type=float, default=0.0)
    p.add_argument("--alias", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--group", type=int, default=32, help="4-bit table group of the int8 row (quantized_scores)")
    return p.parse_args()


def setup(a):
    from edgecompress.compress.augment import augmented
    from edgecompress.data import load_splits
    from edgecompress.embedding import load_embedder
    from edgecompress.modeling import load_tokenizer
    from edgecompress.pooling import Pooling
    from edgecompress.recipe import AugmentCfg, DataCfg
    from edgecompress.zoo import minilm_dir
    d = minilm_dir()
    tok = load_tokenizer(d)
    teacher = load_embedder(d, Pooling("mean", True)).eval()
    splits = load_splits(DataCfg())
    train = augmented(splits["train"], AugmentCfg(rows=a.rows), tok.mask_token, 0)[0] if a.rows else splits["train"]
    return tok, teacher, splits, train


def inputs(x: dict, remap=None) -> dict:
    import torch
    x = {k: torch.from_numpy(t) for k, t in x.items()}
    if remap is not None:
        x["input_ids"] = remap[x["input_ids"]]
    return x


def embed(model, tok, split, remap=None) -> np.ndarray:
    import torch
    from edgecompress.data import batches
    out = None
    with torch.no_grad():
        for x, _, idx in batches(tok, split, 128, 128, shuffle=False):
            v = model(**inputs(x, remap)).logits.numpy()
            out = np.zeros((len(split), v.shape[1]), np.float32) if out is None else out
            out[idx] = v
    return out


def scores(student, tok, split, teacher_vecs, remap=None) -> dict:
    from edgecompress.retrieval import knn_accuracy, recall_at_k, row_cosine
    s = embed(student.eval(), tok, split, remap)
    student.train()
    return {"recall_at_10": recall_at_k(s, teacher_vecs, 10),
            "cosine_to_teacher": float(row_cosine(s, teacher_vecs).mean()),
            "knn_sentiment": knn_accuracy(s, split.labels), "knn_domain": knn_accuracy(s, split.domains)}


def quantized_scores(student, tok, split, teacher_vecs, group: int, remap=None) -> dict:
    """scores() of an int8 copy: 4-bit word table (a scale + zero point per `group` values, the exporters' grid)
    and per-channel dynamic int8 linears, as the .pte runs them."""
    import copy

    import torch
    from edgecompress.export.quant.embedding import unpacked_4bit_embedding
    q = copy.deepcopy(student).eval()
    q.set_input_embeddings(unpacked_4bit_embedding(q.get_input_embeddings(), group))  # the .ptl's lookup, same grid
    q = torch.ao.quantization.quantize_dynamic(q, {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig})
    return {f"int8_{k}": v for k, v in scores(q, tok, split, teacher_vecs, remap).items()}


def alias_map(teacher, tok, texts, n: int):
    """Old id -> the id whose row it reads: itself when among the n most frequent, else the nearest kept row."""
    import torch
    from edgecompress.compress.vocabulary import kept_ids, token_counts
    keep = torch.tensor(kept_ids(tok, token_counts(tok, texts), 1, n))
    rows = torch.nn.functional.normalize(teacher.get_input_embeddings().weight.detach(), dim=-1)
    cont = torch.tensor([t.startswith("##") for t in tok.convert_ids_to_tokens(list(range(len(tok))))])
    remap = torch.arange(len(tok))
    drop = torch.nonzero(~torch.isin(remap, keep)).squeeze(1)
    for d in drop.split(2048):
        sim = (rows[d] @ rows[keep].T).masked_fill(cont[d][:, None] != cont[keep][None, :], -2)
        remap[d] = keep[sim.argmax(1)]
    return remap, len(keep)


def student_for(a, teacher, tok, splits):
    from edgecompress.compress.vocabulary import token_counts, trim_to_corpus
    from edgecompress.modeling import student_from_teacher_layers
    student = student_from_teacher_layers(teacher, [int(x) for x in a.layers.split(",")])
    if a.alias:
        return student, tok, alias_map(teacher, tok, splits["train"].texts, a.alias)
    if a.trim_max is None and not a.trim_all:
        return student, tok, (None, None)
    texts = splits["train"].texts
    s_tok, info = trim_to_corpus(student, tok, texts, 1, a.trim_max, token_counts(tok, texts))
    return student, s_tok, (None, info["vocab_size"])


def train(a) -> dict:
    import torch
    import torch.nn.functional as F
    from edgecompress.data import batches
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    tok, teacher, splits, train_split = setup(a)
    t_train = torch.from_numpy(embed(teacher, tok, train_split))
    t_test = embed(teacher, tok, splits["test"])
    student, s_tok, (remap, vocab) = student_for(a, teacher, tok, splits)
    opt = torch.optim.AdamW(student.parameters(), lr=a.lr, weight_decay=0.01)
    total = -(-len(train_split) // a.batch_size) * a.epochs
    warm = int(0.06 * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / max(1, warm), (total - s) / max(1, total - warm)))
    res = {"args": {k: v for k, v in vars(a).items() if k not in ("collect", "threads")}, "vocab": vocab, "epochs": []}
    t0 = time.time()
    student.train()
    for ep in range(a.epochs):
        for x, _, idx in batches(s_tok, train_split, a.batch_size, 128, shuffle=True, seed=ep):
            s = student(**inputs(x, remap)).logits
            t = t_train[torch.from_numpy(np.asarray(idx))]
            loss = 3 * (1 - F.cosine_similarity(s, t, dim=-1)).mean()
            if a.bank_w:
                loss = loss + a.bank_w * F.kl_div(F.log_softmax(s @ t_train.T / 0.05, -1),
                                                  F.log_softmax(t @ t_train.T / 0.05, -1), reduction="batchmean",
                                                  log_target=True)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            sched.step()
        res["epochs"].append({**scores(student, s_tok, splits["test"], t_test, remap),
                              "seconds": round(time.time() - t0)})
        if ep + 1 == a.epochs:
            res["epochs"][-1].update(quantized_scores(student, s_tok, splits["test"], t_test, a.group, remap))
        print(a.name, ep + 1, res["epochs"][-1], flush=True)
    return res


def collect() -> None:
    runs = {p.stem: json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))}
    (HERE / "levers.json").write_text(json.dumps(runs, indent=1) + "\n")
    print("| probe | layers | lr | vocab rows | train rows | bank KL | recall@10 by epoch | cos to teacher | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in runs.items():
        a, ep = r["args"], r["epochs"]
        recalls = " / ".join(f"{e['recall_at_10']:.3f}" for e in ep) + (f" (cut after {len(ep)} of {a['epochs']})"
                                                                           if len(ep) < a["epochs"] else "")
        rows = f"{r['vocab']:,}" + (" (alias)" if a.get("alias") else "") if r["vocab"] else "30,522"
        print(f"| {name} | {a['layers']} | {a['lr']:g} | {rows} | {a['rows'] or 12677:,} | "
              f"{a['bank_w'] or '—'} | {recalls} | "
              f"{ep[-1]['cosine_to_teacher']:.3f} | {ep[-1]['seconds']} |")


def main() -> None:
    a = parse()
    if a.collect:
        return collect()
    OUT.mkdir(exist_ok=True)
    (OUT / f"{a.name}.json").write_text(json.dumps(train(a), indent=1) + "\n")


if __name__ == "__main__":
    main()
