"""The compressing stages on an embedder: structured pruning and vocabulary trimming cut it, their recovery trains the
vectors toward the teacher's with the embedding loss (labels unused), and every metric is in the task's terms."""
import numpy as np
import pytest
import torch

from edgecompress.compress.base import EmbeddingLoss, StageContext, Teacher
from edgecompress.embedding import load_embedder
from edgecompress.modeling import load_tokenizer
from edgecompress.pooling import resolve_pooling
from edgecompress.recipe import StructuredPruneCfg, TrainCfg, VocabTrimCfg
from edgecompress.registry import STAGES
from edgecompress.zoo import corpus_texts, save_tiny_embedder, small_vader


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_embedder(tmp_path_factory.mktemp("emb") / "t", "bert", texts=corpus_texts(400))


def _setup(folder):
    teacher = Teacher(load_embedder(folder, resolve_pooling(folder)), load_tokenizer(folder))
    student = load_embedder(folder, resolve_pooling(folder))
    with torch.no_grad():  # a student that differs from its teacher, so recovery has something to recover
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ctx = StageContext(small_vader(96, 32), 32, embedding=EmbeddingLoss("cosine"))
    return teacher, student, ctx


def _vectors(model, tok, texts):
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.numpy()


def test_structured_pruning_with_recovery_on_an_embedder(folder):
    # setup
    teacher, student, ctx = _setup(folder)
    cfg = StructuredPruneCfg(heads_fraction=0.25, ffn_fraction=0.5, importance="magnitude",
                             recovery=TrainCfg(epochs=1, learning_rate=1e-3, batch_size=16))
    # execute
    res = STAGES.get("prune_structured")(student, teacher.tokenizer, cfg, ctx, teacher)
    # assert: smaller, still unit vectors of the width, judged by cosine to the teacher (no accuracy anywhere)
    m = res.metrics
    assert m["params"] < m["params_before"] and m["intermediate_size"] < m["intermediate_size_before"]
    assert {"val_cosine_to_teacher", "test_cosine_to_teacher", "val_cosine_to_teacher_before_recovery"} <= set(m)
    assert not [k for k in m if "accuracy" in k]
    assert "val_score" in m["recovery"]["history"][0]
    vecs = _vectors(res.model, teacher.tokenizer, ["a fine day", "no"])
    assert vecs.shape == (2, 32) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)


def test_trimmed_vocabulary_recovery_moves_toward_the_teacher(folder):
    # setup
    teacher, student, ctx = _setup(folder)
    cfg = VocabTrimCfg(recovery=TrainCfg(epochs=2, learning_rate=1e-3, batch_size=16))
    # execute
    res = STAGES.get("trim_vocab")(student, teacher.tokenizer, cfg, ctx, teacher)
    # assert: fewer rows, and recovery raised the validation cosine to the teacher's vectors
    m = res.metrics
    assert m["vocab_size"] < m["vocab_size_before"]
    assert m["val_cosine_to_teacher"] > m["val_cosine_to_teacher_before_recovery"]
