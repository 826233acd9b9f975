"""Builders for the tiny models and data the tests share (fixtures in tests/conftest.py call these)."""
from __future__ import annotations

from pathlib import Path

from edgecompress.data import load_splits
from edgecompress.recipe import DataCfg, PACKAGED_TEACHER


def minilm_dir() -> Path:
    from edgecompress.model_dir import resolve_model_dir
    return resolve_model_dir(PACKAGED_TEACHER)


def tiny_bert_with_real_vocab(num_labels: int = 2, seed: int = 0):
    """Tiny BERT (hidden 32, 2 layers) over MiniLM's real 30,522-token vocab, so the real tokenizer feeds it."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=37, max_position_embeddings=128, num_labels=num_labels)
    return BertForSequenceClassification(cfg).eval()


def small_vader(n_train: int = 320, n_eval: int = 96):
    s = load_splits(DataCfg())
    return {"train": s["train"].subset(n_train), "validation": s["validation"].subset(n_eval),
            "test": s["test"].subset(n_eval)}


def write_small_vader(dest: Path, n_train: int = 320, n_eval: int = 96) -> Path:
    import csv
    dest.mkdir(parents=True, exist_ok=True)
    for name, split in small_vader(n_train, n_eval).items():
        with open(dest / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label", "domain"])
            for t, y, d in zip(split.texts, split.labels, split.domains):
                w.writerow([t, int(y), d])
    return dest


def save_tiny_teacher(dest: Path, num_labels: int = 2) -> Path:
    """A local teacher folder as a user would have it: save_pretrained() model + tokenizer."""
    from edgecompress.modeling import load_tokenizer
    tiny_bert_with_real_vocab(num_labels).save_pretrained(str(dest), safe_serialization=True)
    load_tokenizer(minilm_dir()).save_pretrained(str(dest))
    return dest
