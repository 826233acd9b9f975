import numpy as np
import pytest

from edgecompress.data import PACKAGED_DIR, batches, load_splits
from edgecompress.errors import UserInputError
from edgecompress.recipe import DataCfg


def test_packaged_vader_splits_are_stratified_and_disjoint():
    # execute
    s = load_splits(DataCfg())
    # assert
    assert {k: len(v) for k, v in s.items()} == {"train": 12677, "validation": 1586, "test": 1586}
    assert set(s["train"].domains) == {"tweets", "movies", "amazon", "nyt"}
    for name in ("validation", "test"):
        assert abs(s[name].labels.mean() - s["train"].labels.mean()) < 0.01
    assert not set(s["train"].texts) & set(s["test"].texts) - {""} or \
        len(set(s["train"].texts) & set(s["test"].texts)) < 10  # a few duplicate sentences exist in the source


def _write(d, name, text):
    (d / name).write_text(text, encoding="utf-8")


def _write_splits(d, files: dict) -> None:
    """Three valid splits, with `files` replacing (or, as None, removing) some of them."""
    base = {"train.csv": "text,label\na,1\nb,0\n", "validation.csv": "text,label\na,1\n", "test.csv": "text,label\nc,0\n"}
    base.update(files)
    for name, text in base.items():
        if text is not None:
            _write(d, name, text)


@pytest.mark.parametrize("files, needle", [
    ({"train.csv": "text,label\n"}, "no rows with text"),
    ({"train.csv": "text,label\na,1\nb,1\n"}, "single class"),
    ({"train.csv": "sentence,label\na,1\nb,0\n"}, "no column 'text'"),
    ({"train.csv": "text,label\na,1\nb,0\n", "test.csv": "text,label\nc,7\n"}, "label 7 is outside"),
    ({"train.csv": "text,label\na,1\nb,0\n", "validation.csv": None}, "no validation.csv"),
])
def test_bad_data_is_one_line_error(tmp_path, files, needle):
    # setup
    _write_splits(tmp_path, files)
    # execute / assert
    with pytest.raises(UserInputError, match=needle):
        load_splits(DataCfg(source=str(tmp_path)))


def test_non_utf8_file_is_named(tmp_path):
    # setup
    (tmp_path / "train.csv").write_bytes(b"text,label\ncaf\xe9,1\nb,0\n")
    _write(tmp_path, "validation.csv", "text,label\na,1\n")
    _write(tmp_path, "test.csv", "text,label\na,1\n")
    # execute / assert
    with pytest.raises(UserInputError, match="not UTF-8"):
        load_splits(DataCfg(source=str(tmp_path)))


def test_string_labels_and_jsonl_multiclass(tmp_path):
    # setup
    rows = '{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"}\n{"text": "meh", "label": "neutral"}\n'
    for s in ("train", "validation", "test"):
        _write(tmp_path, f"{s}.jsonl", rows)
    # execute
    s = load_splits(DataCfg(source=str(tmp_path), domain_column=None))
    # assert
    assert s["train"].label_names == ["neg", "neutral", "pos"]
    assert list(s["test"].labels) == [2, 0, 1]


def test_batches_pad_dynamically_and_cover_every_row(minilm_tokenizer):
    # setup
    split = load_splits(DataCfg())["validation"].subset(100)
    # execute
    bs = batches(minilm_tokenizer, split, 16, 128, shuffle=True, seed=1)
    # assert
    idx = np.concatenate([b[2] for b in bs])
    assert sorted(idx.tolist()) == list(range(len(split)))
    for inputs, labels, rows in bs:
        lengths = inputs["attention_mask"].sum(1)
        assert inputs["input_ids"].shape[1] == lengths.max()  # padded to the batch's longest row only
        assert (labels == split.labels[rows]).all()


@pytest.mark.parametrize("files, needle", [
    # mixed label kinds across splits would silently flip a class
    ({"train.csv": "text,label\na,pos\nb,neg\n", "test.csv": "text,label\nc,0\nd,1\n"}, "labels are integers but"),
    ({"train.csv": "text,label\na,1\nb,0\n", "test.csv": "text,label\nc,neg\n"}, "labels are strings but"),
    # gaps or typos in integer labels would become extra, never-trained classes
    ({"train.csv": "text,label\na,1\nb,2\n"}, r"integer labels must be 0..C-1.*missing \(e.g. \[0\]\)"),
    ({"train.csv": "text,label\na,0\nb,999999\n"}, "999998 missing"),
    ({"train.jsonl": '["a", 1]\n', "train.csv": None}, "a JSON list, not an object"),
    ({"train.csv": "text,label\n" + "x" * (17 * 2**20) + ",1\nb,0\n"}, "train.csv: line 2: field larger"),
])
def test_silently_wrong_data_is_refused(tmp_path, files, needle):
    # setup
    _write_splits(tmp_path, files)
    # execute / assert
    with pytest.raises(UserInputError, match=needle):
        load_splits(DataCfg(source=str(tmp_path)))


def test_excel_bom_and_long_cells_are_read(tmp_path):
    # setup: Excel's "CSV UTF-8" BOM, and a 200 KiB review (over Python's default 128 KiB csv field limit)
    long_text = "word " * 40_000
    (tmp_path / "train.csv").write_bytes(b"\xef\xbb\xbftext,label\n" + f'"{long_text}",pos\nb,neg\n'.encode())
    _write(tmp_path, "validation.csv", "text,label\na,pos\n")
    _write(tmp_path, "test.csv", "text,label\nc,neg\n")
    # execute
    splits = load_splits(DataCfg(source=str(tmp_path)))
    # assert
    assert splits["train"].label_names == ["neg", "pos"] and len(splits["train"].texts[0]) == len(long_text)
