"""Session fixtures for the family contract: one tiny model folder per family (built on first use), loaded fresh
for every test that changes its model, and a small slice of the packaged VADER splits."""
from __future__ import annotations

import pytest

from edgecompress.zoo import corpus_texts, save_family_model


class Zoo:
    """family -> a saved tiny model folder, built once per session; `load` gives a fresh (model, tokenizer)."""

    def __init__(self, root):
        self.root, self.dirs, self.texts = root, {}, None

    def folder(self, family: str):
        if family not in self.dirs:
            if self.texts is None:
                self.texts = corpus_texts()
            self.dirs[family] = save_family_model(family, self.root / family, self.texts)
        return self.dirs[family]

    def load(self, family: str):
        from transformers import AutoModelForSequenceClassification
        from edgecompress.modeling import load_tokenizer
        d = self.folder(family)
        model = AutoModelForSequenceClassification.from_pretrained(str(d), local_files_only=True).eval()
        return model, load_tokenizer(d)


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    return Zoo(tmp_path_factory.mktemp("families"))


@pytest.fixture(scope="session")
def family_splits():
    """160 train / 64 validation / 64 test rows: enough for every stage to train, score and measure."""
    from edgecompress.zoo import small_vader
    return small_vader(n_train=160, n_eval=64)
