"""Reading a bundle's tokenizer: the ids it gives must fit the model's embedding table."""
from __future__ import annotations

import pytest

from edgecompress.bundle import read_labels, read_tokenizer, samples
from edgecompress.errors import UserInputError
from edgecompress.export.base import IOSpec


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, minilm_tokenizer):
    from edgecompress.artifact import Store, open_export
    store = Store(tmp_path_factory.mktemp("bundle"))
    with store.create("export", "e0", {"format": "onnx", "precision": "fp32"}, []) as d:
        (d / "model.onnx").write_bytes(b"x")
        (d / "io.json").write_text("{}")
        minilm_tokenizer.backend_tokenizer.save(str(d / "tokenizer.json"))
        (d / "labels.json").write_text('{"labels": ["neg", "pos"]}')
    return open_export(store.path_for("export", "e0"))  # bundle files are read through the export's reader


def test_tokenizer_bigger_than_the_embedding_table_is_refused(bundle_dir):
    # execute / assert: e.g. the original tokenizer beside a vocabulary-trimmed model
    with pytest.raises(UserInputError, match="30522 tokens but the model's embedding table has 5000"):
        read_tokenizer(bundle_dir, IOSpec(vocab_size=5000, num_labels=2, max_seq_len=16))


def test_samples_are_truncated_to_the_bound_with_the_models_input_names(bundle_dir, minilm_tokenizer):
    # setup
    io = IOSpec(vocab_size=30522, num_labels=2, max_seq_len=8)
    tok = read_tokenizer(bundle_dir, io)
    # execute
    (s,) = samples(tok, ["a long sentence that certainly has more than eight word pieces in it"], io)
    # assert: the same ids transformers gives, cut at the bound
    ref = minilm_tokenizer("a long sentence that certainly has more than eight word pieces in it", truncation=True,
                           max_length=8)["input_ids"]
    assert set(s) == {"input_ids", "attention_mask"} and s["input_ids"] == [ref] and s["attention_mask"] == [[1] * 8]
    assert read_labels(bundle_dir, 2) == ["neg", "pos"] and read_labels(bundle_dir, 3) == ["0", "1", "2"]
