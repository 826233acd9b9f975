"""Shared fixtures. Models are tiny and built from configs: no downloads, seconds to build."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_bert():
    """A 2-layer, 32-wide BERT classifier (random init, seeded, eval mode). Session-scoped: do not mutate it."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=1100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=37, max_position_embeddings=128, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The packaged MiniLM tokenizer, loaded from its local folder like the product does."""
    from edgecompress.modeling import load_tokenizer
    from edgecompress.zoo import minilm_dir
    return load_tokenizer(minilm_dir())


@pytest.fixture
def tiny_vocab_bert():
    """Tiny BERT over the real 30,522-token vocab; function-scoped because stages modify their model."""
    from edgecompress.zoo import tiny_bert_with_real_vocab
    return tiny_bert_with_real_vocab()


@pytest.fixture(scope="session")
def small_splits():
    """320 train / 96 validation / 96 test rows of the packaged VADER data, stratified."""
    from edgecompress.zoo import small_vader
    return small_vader()


# Device-side fixtures (a tiny hand-built ONNX classifier, a loopback sshd), shared by tests/device, tests/bench
# and tests/transports.
from tests._device import sshd, tiny_model, zero_model  # noqa: E402,F401
