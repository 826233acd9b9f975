"""Vocabulary trimming: smaller embedding table, a tokenizer mapping to the new ids, identical logits in-vocabulary."""
import torch

from edgecompress.compress.base import StageContext, Teacher
from edgecompress.compress.vocab import trim_vocab
from edgecompress.recipe import VocabTrimCfg


def _logits(model, tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits


def test_trimmed_tokenizer_and_model_match_the_original_on_corpus_text(tiny_vocab_bert, minilm_tokenizer,
                                                                       small_splits, tmp_path):
    # setup
    import copy
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    original = copy.deepcopy(tiny_vocab_bert)
    ctx = StageContext(small_splits, 64)
    texts = small_splits["train"].texts[:40]  # in the corpus, so every token is kept
    # execute
    res = trim_vocab(tiny_vocab_bert, minilm_tokenizer, VocabTrimCfg(corpus_splits=["train"]), ctx)
    model, new_tok = res.model, res.tokenizer
    # assert: same tokens (new ids), same logits; table and config shrank; specials kept
    n = res.metrics["vocab_size"]
    assert 100 < n < 5000 and model.config.vocab_size == n == len(new_tok)
    assert model.get_input_embeddings().weight.shape == (n, 32)
    for t in texts[:10]:
        assert new_tok.tokenize(t) == minilm_tokenizer.tokenize(t)
    assert {new_tok.pad_token, new_tok.unk_token, new_tok.cls_token, new_tok.sep_token} <= set(new_tok.get_vocab())
    assert new_tok.pad_token_id == 0 and model.config.pad_token_id == 0
    torch.testing.assert_close(_logits(model, new_tok, texts), _logits(original, minilm_tokenizer, texts),
                               atol=1e-5, rtol=0)
    # and after the pipeline's save_pretrained -> from_pretrained round trip
    model.save_pretrained(str(tmp_path), safe_serialization=True)
    new_tok.save_pretrained(str(tmp_path))
    m2 = AutoModelForSequenceClassification.from_pretrained(str(tmp_path), local_files_only=True).eval()
    t2 = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert len(t2) == n
    torch.testing.assert_close(_logits(m2, t2, texts), _logits(original, minilm_tokenizer, texts), atol=1e-5, rtol=0)


def test_unseen_tokens_map_to_unk_or_kept_pieces(tiny_vocab_bert, minilm_tokenizer, small_splits):
    # setup
    ctx = StageContext(small_splits, 64)
    tok = trim_vocab(tiny_vocab_bert, minilm_tokenizer, VocabTrimCfg(), ctx).tokenizer
    # execute
    ids = tok("鑫 good")["input_ids"]
    # assert: a character never seen is [UNK]; every id is inside the new table
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "[UNK]", "good", "[SEP]"]
    words = " ".join(small_splits["test"].texts)
    assert max(tok(words)["input_ids"]) < len(tok)


def test_min_count_keeps_fewer_tokens(tiny_vocab_bert, minilm_tokenizer, small_splits):
    # setup
    import copy
    ctx = StageContext(small_splits, 64)
    # execute
    one = trim_vocab(copy.deepcopy(tiny_vocab_bert), minilm_tokenizer, VocabTrimCfg(min_count=1), ctx)
    three = trim_vocab(tiny_vocab_bert, minilm_tokenizer, VocabTrimCfg(min_count=3, corpus_splits=["train", "validation"]),
                       ctx)
    # assert
    assert three.metrics["vocab_size"] < one.metrics["vocab_size"]


def test_recovery_fine_tunes_the_trimmed_model_under_the_full_vocabulary_teacher(tiny_vocab_bert, minilm_tokenizer,
                                                                                 small_splits):
    # setup: the teacher keeps the full vocabulary; the student is trimmed hard so most ids change
    import copy
    from edgecompress.recipe import TrainCfg
    teacher = copy.deepcopy(tiny_vocab_bert).eval()
    ctx = StageContext(small_splits, 64)
    cfg = VocabTrimCfg(min_count=2, recovery=TrainCfg(epochs=1, learning_rate=1e-3, batch_size=16,
                                                      max_train_samples=64))
    # execute
    res = trim_vocab(tiny_vocab_bert, minilm_tokenizer, cfg, ctx, Teacher(teacher, minilm_tokenizer))
    model, tok = res.model, res.tokenizer
    # assert: recovery ran with the teacher, on the trimmed ids, and moved the embedding it trained
    rec = res.metrics["recovery"]
    assert rec["teacher"] is True and rec["max_train_samples"] == 64 and rec["history"]
    assert model.config.vocab_size == res.metrics["vocab_size"] == len(tok) < len(minilm_tokenizer)
    kept = tok.convert_ids_to_tokens(list(range(len(tok))))
    before = teacher.get_input_embeddings().weight[minilm_tokenizer.convert_tokens_to_ids(kept)]
    assert not torch.allclose(model.get_input_embeddings().weight, before)
