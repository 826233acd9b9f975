"""Tiny models for trying every stage and format in seconds: one per model family, built from a config with a
tokenizer trained here on the packaged text (no downloads), a tiny BERT over the packaged MiniLM's real vocabulary,
and small stratified slices of the packaged VADER data. The tests, the support matrix and the family benchmarks use
them; nothing in a run does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from edgecompress.data import load_splits
from edgecompress.recipe import PACKAGED_TEACHER, DataCfg

FAMILIES = ("bert", "distilbert", "roberta", "xlm-roberta", "electra", "deberta-v2", "modernbert")
VOCAB = 1200  # learned pieces per tokenizer: small enough that the tiny embedding is cheap, big enough for words

# The family's own special tokens (as its hub tokenizers spell them), in the order they get ids 0..n-1.
_SPECIALS = {
    "wordpiece": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    "modernbert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "xlm-roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    "deberta-v2": ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"],
}


def corpus_texts(n: int = 4000) -> list[str]:
    """The first n packaged VADER train sentences: the tokenizers learn from the user's domain, like a real one."""
    return load_splits(DataCfg())["train"].texts[:n]


def _wordpiece(texts: list[str], vocab: int):
    from tokenizers import BertWordPieceTokenizer, processors
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(texts, vocab_size=vocab, special_tokens=_SPECIALS["wordpiece"], show_progress=False)
    # Trained from scratch it has no [CLS]/[SEP] template yet (the constructor only adds one for a given vocab).
    tok.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    return tok, dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def _byte_bpe(texts: list[str], family: str, vocab: int):
    from tokenizers import ByteLevelBPETokenizer, processors
    specials = _SPECIALS[family]
    tok = ByteLevelBPETokenizer(add_prefix_space=family == "roberta")
    tok.train_from_iterator(texts, vocab_size=vocab, special_tokens=specials, show_progress=False)
    if family == "roberta":
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                          add_prefix_space=True)
        return tok, dict(bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                         pad_token="<pad>", mask_token="<mask>")
    # ModernBERT's hub tokenizer is a plain PreTrainedTokenizerFast: byte-level BPE, [CLS] $A [SEP].
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok, dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def _unigram(texts: list[str], family: str, vocab: int):
    from tokenizers import SentencePieceUnigramTokenizer, processors
    specials = _SPECIALS[family]
    unk = "<unk>" if family == "xlm-roberta" else "[UNK]"
    tok = SentencePieceUnigramTokenizer()
    tok.train_from_iterator(texts, vocab_size=vocab, special_tokens=specials, unk_token=unk, show_progress=False)
    if family == "xlm-roberta":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                           special_tokens=[("<s>", 0), ("</s>", 2)])
        return tok, dict(bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                         pad_token="<pad>", mask_token="<mask>")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    return tok, dict(bos_token="[CLS]", eos_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                     sep_token="[SEP]", mask_token="[MASK]")


def make_tokenizer(family: str, texts: list[str], vocab: int = VOCAB):
    """A transformers fast tokenizer of the family's class over a tokenizer of its kind trained on `texts`."""
    import transformers as T
    if family in ("bert", "distilbert", "electra"):
        raw, kw = _wordpiece(texts, vocab)
        cls = {"bert": T.BertTokenizerFast, "distilbert": T.DistilBertTokenizerFast,
               "electra": T.ElectraTokenizerFast}[family]
    elif family in ("roberta", "modernbert"):
        raw, kw = _byte_bpe(texts, family, vocab)
        cls = T.RobertaTokenizerFast if family == "roberta" else T.PreTrainedTokenizerFast
    else:
        raw, kw = _unigram(texts, family, vocab)
        cls = T.XLMRobertaTokenizerFast if family == "xlm-roberta" else T.DebertaV2TokenizerFast
    return cls(tokenizer_object=raw._tokenizer, **kw)


def make_config(family: str, tokenizer, hidden: int = 32, layers: int = 2, heads: int = 4, ffn: int = 37,
                num_labels: int = 2, max_positions: int = 128):
    """The family's config at the given size, with its special ids taken from `tokenizer`."""
    import transformers as T
    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, num_labels=num_labels)
    common = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn, **ids)
    if family == "bert":
        return T.BertConfig(max_position_embeddings=max_positions, **common)
    if family == "distilbert":
        return T.DistilBertConfig(dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=ffn,
                                  max_position_embeddings=max_positions, **ids)
    if family in ("roberta", "xlm-roberta"):
        cls = T.RobertaConfig if family == "roberta" else T.XLMRobertaConfig
        # RoBERTa numbers positions from pad_token_id + 1: two more rows than the longest sequence.
        return cls(max_position_embeddings=max_positions + 2, bos_token_id=tokenizer.cls_token_id,
                   eos_token_id=tokenizer.sep_token_id, **common)
    if family == "electra":
        # ELECTRA-small's embedding is narrower than its hidden state (128 vs 256), joined by a projection.
        return T.ElectraConfig(embedding_size=hidden // 2, max_position_embeddings=max_positions, **common)
    if family == "deberta-v2":
        # DeBERTa-v3's shape: relative positions only (no absolute position table), shared attention keys.
        return T.DebertaV2Config(max_position_embeddings=max_positions, relative_attention=True, position_buckets=32,
                                 max_relative_positions=-1, pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm",
                                 share_att_key=True, position_biased_input=False, type_vocab_size=0, **common)
    if family == "modernbert":
        return T.ModernBertConfig(max_position_embeddings=max_positions, cls_token_id=tokenizer.cls_token_id,
                                  sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
                                  eos_token_id=tokenizer.sep_token_id, **common)
    raise KeyError(family)


def make_model(family: str, tokenizer, seed: int = 0, **size):
    import torch
    from transformers import AutoModelForSequenceClassification
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(make_config(family, tokenizer, **size)).eval()


def save_family_model(family: str, dest: Path, texts: list[str] | None = None, seed: int = 0, **size) -> Path:
    """A local model folder as a user would have it: save_pretrained() model + tokenizer."""
    tok = make_tokenizer(family, texts if texts is not None else corpus_texts())
    make_model(family, tok, seed, **size).save_pretrained(str(dest), safe_serialization=True)
    tok.save_pretrained(str(dest))
    return dest


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


def write_small_vader(dest: Path, n_train: int = 320, n_eval: int = 96, names: Optional[list[str]] = None) -> Path:
    """The small VADER slice as a user's CSV folder; `names`: write class i as names[i] (string labels)."""
    import csv
    dest.mkdir(parents=True, exist_ok=True)
    for name, split in small_vader(n_train, n_eval).items():
        with open(dest / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label", "domain"])
            for t, y, d in zip(split.texts, split.labels, split.domains):
                w.writerow([t, names[int(y)] if names else int(y), d])
    return dest


def save_tiny_teacher(dest: Path, num_labels: int = 2) -> Path:
    """A local teacher folder as a user would have it: save_pretrained() model + tokenizer."""
    from edgecompress.modeling import load_tokenizer
    tiny_bert_with_real_vocab(num_labels).save_pretrained(str(dest), safe_serialization=True)
    load_tokenizer(minilm_dir()).save_pretrained(str(dest))
    return dest


def save_tiny_embedder(dest: Path, family: str = "bert", pooling: str = "mean", normalize: bool = True,
                       texts: list[str] | None = None) -> Path:
    """A tiny sentence-transformers folder of a family: the encoder + tokenizer, modules.json and 1_Pooling."""
    from edgecompress.pooling import Pooling, write_st_folder
    save_family_model(family, dest, texts)
    write_st_folder(dest, Pooling(pooling, normalize), 32)
    return dest
