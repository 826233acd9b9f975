"""Per family: teacher -> distilled student (narrower, from a config) -> trimmed vocabulary -> onnx int8, judged in
onnxruntime against the torch student by label agreement and SQNR, at a batch and lengths other than the export's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgecompress.compress.base import StageContext, Teacher
from edgecompress.compress.distill import distill
from edgecompress.compress.vocab import trim_vocab
from edgecompress.export.base import IOSpec
from edgecompress.export.parity import sqnr_db
from edgecompress.recipe import DistillCfg, QuantSpec, StudentArchCfg, StudentCfg, TrainCfg, VocabTrimCfg
from edgecompress.registry import EXPORTERS
from edgecompress.zoo import FAMILIES

MIN_LABEL_AGREEMENT = 0.9
MIN_SQNR_DB = 15.0  # measured 34-54 dB on these students; 0 dB would mean unrelated logits


@pytest.mark.parametrize("family", FAMILIES)
def test_distilled_trimmed_student_exports_to_onnx_int8(zoo, family, family_splits, tmp_path):
    # setup: the stages a user's recipe would chain
    teacher, tok = zoo.load(family)
    model, _ = zoo.load(family)
    ctx = StageContext(family_splits, 64)
    arch = StudentArchCfg(num_hidden_layers=1, hidden_size=16, intermediate_size=20)
    cfg = DistillCfg(student=StudentCfg(config=arch),
                     train=TrainCfg(epochs=2, learning_rate=2e-3, batch_size=16, max_train_samples=160))
    student = distill(model, tok, cfg, ctx, Teacher(teacher, tok))
    res = trim_vocab(student.model, student.tokenizer, VocabTrimCfg(corpus_splits=["train", "test"]), ctx)
    model, tok = res.model, res.tokenizer
    io = IOSpec(vocab_size=len(tok), num_labels=2, max_seq_len=64, pad_token_id=tok.pad_token_id)
    exporter = EXPORTERS.get("onnx")(batch=1)
    # execute
    out = exporter.export(model, io, QuantSpec(per_channel=True), None, tmp_path)
    infer = exporter.load(out.file)
    # assert: the whole test split in batches of 16 (the export shape was 2 x 32)
    got, ref = [], []
    texts = family_splits["test"].texts
    for i in range(0, len(texts), 16):
        enc = tok(texts[i:i + 16], padding=True, truncation=True, max_length=64, return_tensors="np")
        x = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
        got.append(infer(x))
        with torch.no_grad():
            ref.append(model(**{k: torch.from_numpy(v) for k, v in x.items()}).logits.numpy())
    got, ref = np.concatenate(got), np.concatenate(ref)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= MIN_LABEL_AGREEMENT
    assert sqnr_db(ref, got) >= MIN_SQNR_DB


@pytest.mark.slow
@pytest.mark.parametrize("family", ["roberta", "deberta-v2"])
def test_families_with_integer_index_arithmetic_export_to_pte_int8(zoo, family, tmp_path):
    # setup: RoBERTa's position ids and DeBERTa's relative-position gather are integer arithmetic, which the
    # XNNPACK quantizer's scalar-to-tensor pass used to turn float
    model, tok = zoo.load(family)
    io = IOSpec(vocab_size=len(tok), num_labels=2, max_seq_len=64, pad_token_id=tok.pad_token_id)
    exporter = EXPORTERS.get("pte")(batch=1)
    # execute
    out = exporter.export(model, io, QuantSpec(per_channel=True), None, tmp_path)
    infer = exporter.load(out.file)
    # assert
    enc = tok(["a quiet, warm film", "not good at all, sadly"], truncation=True, max_length=64)
    for ids in enc["input_ids"]:
        x = {"input_ids": np.array([ids], dtype=np.int64), "attention_mask": np.ones((1, len(ids)), dtype=np.int64)}
        with torch.no_grad():
            ref = model(**{k: torch.from_numpy(v) for k, v in x.items()}).logits.numpy()
        assert infer(x).argmax(1) == ref.argmax(1) and np.abs(infer(x) - ref).max() < 0.05
