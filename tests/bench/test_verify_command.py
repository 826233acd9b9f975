"""`edgecompress verify` on export artifacts of every cheap format, and integrity checks before any use."""
from __future__ import annotations

import json
import shutil

import pytest

from edgecompress.artifact import Store
from edgecompress.cli import main
from edgecompress.zoo import save_tiny_teacher


def _export_in_store(tmp_path, fmt: str):
    """A model artifact and an export of it side by side in a store, as `edgecompress run` leaves them."""
    from transformers import AutoModelForSequenceClassification

    from edgecompress.export.base import IOSpec
    from edgecompress.registry import EXPORTERS
    store = Store(tmp_path / "store")
    teacher = save_tiny_teacher(tmp_path / "teacher")
    with store.create("model", "m0", {}, []) as d:
        shutil.copytree(teacher, d / "model")
    model = AutoModelForSequenceClassification.from_pretrained(str(teacher)).eval()
    io = IOSpec(vocab_size=model.config.vocab_size, num_labels=2, max_seq_len=64)
    with store.create("export", "e0", {"format": fmt, "precision": "fp32"}, ["m0"]) as d:
        res = EXPORTERS.get(fmt)().export(model, io, None, None, d)
        (d / "metrics.json").write_text(json.dumps({"file": res.file.name}))
    return store.path_for("export", "e0")


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_verify_reports_label_agreement_for_each_format(tmp_path, fmt, capsys):
    # setup
    exp = _export_in_store(tmp_path, fmt)
    # execute
    code = main(["verify", str(exp), "--target", "local", "--limit", "8", "--min-agreement", "0.5"])
    # assert
    res = json.loads(capsys.readouterr().out)
    assert code == 0, res
    assert res["ok"] and res["n"] == 8 and res["runtime"] == {"onnx": "onnxruntime", "tflite": "tflite"}[fmt]
    assert res["agreement_host_runtime"] == 1.0 and res["agreement_host_torch"] >= 0.75


def test_verify_and_bench_refuse_an_artifact_whose_bytes_changed(tmp_path, capsys):
    # setup: one byte of the model changed after the store wrote its hash
    exp = _export_in_store(tmp_path, "onnx")
    model = exp / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    # execute
    codes = [main(["verify", str(exp), "--target", "local", "--limit", "2"]),
             main(["bench", str(exp), "--profile", "host", "--runs", "1"])]
    # assert
    err = capsys.readouterr().err
    assert codes == [2, 2]
    assert err.count("does not match its sha256") == 2 and "re-create it" in err


def test_manifest_path_outside_the_artifact_is_refused(tmp_path, capsys):
    # setup: a manifest that names a file elsewhere on the host
    exp = _export_in_store(tmp_path, "onnx")
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(exp / "model.onnx", outside)
    manifest = json.loads((exp / "manifest.json").read_text())
    manifest["files"][str(outside)] = manifest["files"].pop("model.onnx")
    manifest["metrics"]["file"] = str(outside)
    (exp / "manifest.json").write_text(json.dumps(manifest))
    # execute
    code = main(["bench", str(exp), "--profile", "host", "--runs", "1"])
    # assert
    assert code == 2 and "lies outside the artifact folder" in capsys.readouterr().err


def test_verify_an_export_copied_without_its_parent_says_where_to_run_it(tmp_path, capsys):
    # setup
    exp = _export_in_store(tmp_path, "onnx")
    alone = tmp_path / "copied"
    shutil.copytree(exp, alone)
    # execute
    code = main(["verify", str(alone), "--target", "local", "--limit", "2"])
    # assert
    assert code == 2 and "model folder it was exported from is not beside it" in capsys.readouterr().err


@pytest.mark.parametrize("argv,msg", [(["--limit", "0"], "--limit must be >= 1"),
                                      (["--threads", "0"], "--threads must be >= 1")])
def test_verify_rejects_bad_numbers_before_any_work(tmp_path, argv, msg, capsys):
    # execute
    code = main(["verify", str(tmp_path), *argv])
    # assert
    assert code == 2 and msg in capsys.readouterr().err
