"""One reader of artifact files: listed in the manifest, inside the folder, matching its sha256 — for the model
file the manifest names, the bundle files (tokenizer.json, labels.json) and the pipeline's own reads."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from edgecompress.artifact import MANIFEST, Store, open_export
from edgecompress.cli import main
from edgecompress.errors import UserInputError

IO = {"vocab_size": 30522, "max_seq_len": 16, "num_labels": 2, "input_names": ["input_ids", "attention_mask"]}


@pytest.fixture
def export_dir(tmp_path, minilm_tokenizer):
    """An export artifact as the store writes it: model, io.json, tokenizer.json and labels.json, all hashed."""
    store = Store(tmp_path / "store")
    with store.create("export", "e0", {"format": "onnx", "precision": "fp32"}, []) as d:
        (d / "model.onnx").write_bytes(b"not really onnx")
        (d / "io.json").write_text(json.dumps(IO))
        minilm_tokenizer.backend_tokenizer.save(str(d / "tokenizer.json"))
        (d / "labels.json").write_text(json.dumps({"labels": ["neg", "pos"]}))
        (d / "metrics.json").write_text(json.dumps({"file": "model.onnx"}))
    return store.path_for("export", "e0")


def _edit_manifest(d: Path, fn) -> None:
    m = json.loads((d / MANIFEST).read_text())
    fn(m)
    (d / MANIFEST).write_text(json.dumps(m))


def _outside_model(d: Path, how: str) -> None:
    """Point metrics.file at a copy of the model outside the folder, the files block untouched (metrics is not
    hashed), in one of three spellings."""
    outside = d.parent / "elsewhere.onnx"
    outside.write_bytes((d / "model.onnx").read_bytes())
    if how == "symlink":
        (d / "link.onnx").symlink_to(outside)
        name = "link.onnx"
    else:
        name = str(outside) if how == "absolute" else "../elsewhere.onnx"
    _edit_manifest(d, lambda m: m["metrics"].update(file=name))


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_a_model_file_named_outside_the_artifact_is_refused_as_such(export_dir, how, capsys):
    # setup
    _outside_model(export_dir, how)

    # execute
    code = main(["bench", str(export_dir), "--profile", "host", "--runs", "1"])

    # assert: says what is wrong, not "expected one listed .onnx file, found 1"
    err = capsys.readouterr().err
    assert code == 2 and "lies outside the artifact folder" in err and "expected one listed" not in err


def test_a_model_file_named_but_not_listed_is_refused_as_such(export_dir):
    # setup: a second model file dropped into the folder after the store hashed it
    (export_dir / "other.onnx").write_bytes(b"planted")
    _edit_manifest(export_dir, lambda m: m["metrics"].update(file="other.onnx"))

    # execute / assert
    with pytest.raises(UserInputError, match="'other.onnx' named in metrics.file is not listed in files"):
        open_export(export_dir)


@pytest.mark.parametrize("rel", ["/etc/hostname", "../elsewhere.onnx", "link.onnx", "unlisted.txt", "model.onnx"])
def test_checked_refuses_anything_but_a_listed_intact_file_inside(export_dir, rel):
    # setup
    exp = open_export(export_dir)
    (export_dir.parent / "elsewhere.onnx").write_bytes(b"x")
    (export_dir / "link.onnx").symlink_to(export_dir.parent / "elsewhere.onnx")
    (export_dir / "unlisted.txt").write_text("x")
    _edit_manifest(export_dir, lambda m: m["files"].update({"link.onnx": m["files"]["model.onnx"],
                                                             "../elsewhere.onnx": m["files"]["model.onnx"]}))
    (export_dir / "model.onnx").write_bytes(b"changed after hashing")
    from edgecompress.artifact import Artifact
    art = Artifact.open(export_dir)

    # execute / assert
    with pytest.raises(UserInputError, match="outside the artifact folder|not a file listed|does not match its sha256"):
        art.checked(rel)
    assert exp.file("unlisted.txt") is None


def test_bundle_files_come_through_the_reader(export_dir, minilm_tokenizer):
    # setup: a labels.json edited after export, and a tokenizer.json the manifest never listed
    from edgecompress.bundle import read_labels, read_tokenizer
    exp = open_export(export_dir)
    _edit_manifest(export_dir, lambda m: m["files"].pop("tokenizer.json"))
    unlisted = open_export(export_dir)
    (export_dir / "labels.json").write_text(json.dumps({"labels": ["spam", "ham"]}))

    # execute / assert: an edited bundle file is refused, an unlisted one never read
    with pytest.raises(UserInputError, match=r"labels\.json does not match its sha256"):
        read_labels(exp, 2)
    with pytest.raises(UserInputError, match="no tokenizer.json"):
        read_tokenizer(unlisted, IO)


def test_bundle_tokenizer_symlinked_out_of_the_folder_is_refused(export_dir, tmp_path):
    # setup: the same bytes, but the file now lives elsewhere (a later edit there would go unnoticed)
    from edgecompress.artifact import Artifact
    from edgecompress.bundle import read_tokenizer
    exp = open_export(export_dir)
    moved = tmp_path / "tok.json"
    os.rename(export_dir / "tokenizer.json", moved)
    (export_dir / "tokenizer.json").symlink_to(moved)

    # execute / assert
    with pytest.raises(UserInputError, match="lies outside the artifact folder"):
        read_tokenizer(exp, IO)
    with pytest.raises(UserInputError, match="lies outside the artifact folder"):
        Artifact.open(export_dir).hash_problem()


def test_predict_never_reads_an_unlisted_tokenizer(export_dir, capsys):
    # setup: tokenizer.json taken out of the manifest (as if planted after the export)
    _edit_manifest(export_dir, lambda m: m["files"].pop("tokenizer.json"))

    # execute
    code = main(["predict", str(export_dir), "some text"])

    # assert
    assert code == 2 and "no tokenizer.json" in capsys.readouterr().err


def test_pipeline_reads_export_files_only_through_the_reader():
    # setup: the run's bench and verify steps pick files of an export artifact they did not just write
    import edgecompress.steps as steps
    source = Path(steps.__file__).read_text()

    # execute
    joined = re.findall(r"\bexp\.path\s*/", source)

    # assert: no path is built by joining the folder with a (possibly unhashed) manifest value
    assert joined == [] and source.count("exp.checked(") >= 4
