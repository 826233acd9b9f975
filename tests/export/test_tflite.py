"""The .tflite exporter: one static int32 [batch, max_seq_len] signature, inputs padded to it by load() (and by the
on-device agent, tests/device/test_agent_tflite.py), fp32 via litert-torch, int8 via ai-edge-quantizer, run in ai-edge-litert.

One litert-torch conversion per module (~20 s on this 2-core machine, plus ~18 s to import jax the first time); the
int8 export reuses those fp32 bytes instead of converting again (the quantizer step itself takes < 1 s). The full
convert-then-quantize path runs in the e2e pipeline (docs/tflite.md).
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from edgecompress.errors import UserInputError
from edgecompress.export.base import IO_FILE, IOSpec
from edgecompress.export.parity import compare
from edgecompress.export.tflite import TfliteExporter, pad_rows
from edgecompress.recipe import QuantSpec
from edgecompress.registry import EXPORTERS

IO = IOSpec(vocab_size=1100, num_labels=2, max_seq_len=64, example_batch=2, example_seq_len=32, pad_token_id=0)
# None of these is the signature's [1, 64] except the last's seq; batch 3 and 6 exercise the row loop.
SHAPES = [(1, 17), (3, 41), (6, 64)]
FP32_ATOL = 1e-4
INT8_MIN_SQNR_DB = 20.0  # measured 36.9 dB on the tiny BERT at SHAPES


@pytest.fixture(scope="module")
def fp32_export(tiny_bert, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("tflite-fp32")
    cwd = tmp_path_factory.mktemp("tflite-fp32-cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)  # anything the converter drops into the CWD shows up here
        result = TfliteExporter().export(tiny_bert, IO, None, None, out_dir)
    return result, out_dir, sorted(os.listdir(cwd))


@pytest.fixture(scope="module")
def int8_export(tiny_bert, fp32_export, tmp_path_factory):
    fp32_bytes = fp32_export[0].file.read_bytes()
    out_dir = tmp_path_factory.mktemp("tflite-int8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TfliteExporter, "convert", lambda self, module, io, tmp: fp32_bytes)  # fp32_export converted it
        result = TfliteExporter().export(tiny_bert, IO, QuantSpec(per_channel=True), None, out_dir)
    return result, out_dir


def test_registered_and_toolchain_present():
    # setup / execute
    exporter = EXPORTERS.get("tflite")()

    # assert
    assert isinstance(exporter, TfliteExporter)
    assert (exporter.runtime, exporter.suffix, exporter.extra) == ("tflite", ".tflite", "tflite")
    assert exporter.spec.missing_modules() == []  # the default install has the tflite extra


def test_export_writes_one_file_and_a_static_io_spec(fp32_export):
    # setup
    result, out_dir, cwd_files = fp32_export

    # execute
    io = IOSpec.read(out_dir / IO_FILE)

    # assert
    assert sorted(os.listdir(out_dir)) == sorted([result.file.name, IO_FILE]) and result.file.suffix == ".tflite"
    assert cwd_files == []
    assert io.static_shape == (1, IO.max_seq_len) and io.input_dtype == "int32" and io.pad_to_max is True
    assert result.details["static_shape"] == [1, 64] and result.details["precision"] == "fp32"
    assert any("padded to max_seq_len" in n for n in result.notes)


def test_fp32_matches_torch_at_shapes_other_than_the_signature(tiny_bert, fp32_export):
    # setup
    infer = TfliteExporter().load(fp32_export[0].file)

    # execute
    par = compare(tiny_bert, infer, IO, shapes=SHAPES)

    # assert
    assert par["max_abs_diff"] < FP32_ATOL, par
    assert par["label_agreement"] == 1.0


def test_int8_is_smaller_and_close(tiny_bert, fp32_export, int8_export):
    # setup
    result, _ = int8_export
    infer = TfliteExporter().load(result.file)

    # execute
    par = compare(tiny_bert, infer, IO, shapes=SHAPES)

    # assert
    assert result.file.stat().st_size < 0.7 * fp32_export[0].file.stat().st_size
    assert par["sqnr_db"] > INT8_MIN_SQNR_DB and par["label_agreement"] >= 0.75, par
    assert result.details["per_channel"] is True and any("ai-edge-quantizer" in n for n in result.notes)


def test_load_pads_by_the_file_even_when_io_json_lost_the_static_fields(tiny_bert, fp32_export, tmp_path):
    # setup: an io.json written without static_shape/pad_to_max (an older writer); the file's own shape rules
    (tmp_path / "model.tflite").write_bytes(fp32_export[0].file.read_bytes())
    IO.write(tmp_path / IO_FILE)

    # execute
    par = compare(tiny_bert, TfliteExporter().load(tmp_path / "model.tflite"), IO, shapes=[(2, 9)])

    # assert
    assert par["max_abs_diff"] < FP32_ATOL


def test_too_long_input_is_a_user_error(fp32_export):
    # setup
    infer = TfliteExporter().load(fp32_export[0].file)

    # execute / assert
    with pytest.raises(UserInputError, match="exceeds the exported max_seq_len"):
        infer(IO.example_inputs(1, IO.max_seq_len + 1))


def test_pad_rows_pads_with_pad_id_and_mask_zero_and_chunks_rows():
    # setup
    ids = np.array([[5, 6, 7], [8, 9, 0], [4, 4, 4]], dtype=np.int64)
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1]], dtype=np.int64)

    # execute
    chunks, n = pad_rows(ids, mask, (2, 5), pad_token_id=3)

    # assert
    assert n == 3 and len(chunks) == 2
    assert all(c.dtype == np.int32 and c.shape == (2, 5) for pair in chunks for c in pair)
    assert chunks[0][0].tolist() == [[5, 6, 7, 3, 3], [8, 9, 0, 3, 3]]
    assert chunks[0][1].tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]
    assert chunks[1][0].tolist() == [[4, 4, 4, 3, 3]] * 2  # last chunk filled with a copy of its last row
    with pytest.raises(UserInputError):
        pad_rows(ids, mask, (1, 2), pad_token_id=0)


def test_io_spec_round_trips_the_static_fields_and_reads_old_files(tmp_path):
    # setup
    static = TfliteExporter(batch=2).file_io(IO)
    old = {k: v for k, v in IO.to_json().items() if k not in ("static_shape", "pad_to_max")}

    # execute
    static.write(tmp_path / "a.json")
    back = IOSpec.read(tmp_path / "a.json")
    from_old = IOSpec.from_json(old)

    # assert
    assert back == static and back.static_shape == (2, 64)
    assert json.loads((tmp_path / "a.json").read_text())["static_shape"] == [2, 64]
    assert from_old == IO and from_old.static_shape is None and from_old.pad_to_max is False



def test_int8_keeps_the_embedding_table_fp32_when_the_intent_says_so(fp32_export):
    # setup
    from edgecompress.export.tflite import quantize_tflite
    fp32 = fp32_export[0].file.read_bytes()
    table_bytes = IO.vocab_size * 32 * 4  # the tiny BERT's word embeddings, fp32

    # execute
    with_table = len(quantize_tflite(fp32, QuantSpec()))
    without = len(quantize_tflite(fp32, QuantSpec(embeddings=False)))

    # assert: the int8 table saves about 3/4 of its fp32 bytes (measured 0.66: scales and flatbuffer alignment)
    assert 0.55 * table_bytes < without - with_table < 0.8 * table_bytes


@pytest.mark.parametrize("intent", [{"activations": "static"}, {"weights": "codebook"}])
def test_intents_tflite_cannot_realize_are_refused_before_converting(tiny_bert, tmp_path, intent, monkeypatch):
    # setup
    monkeypatch.setattr(TfliteExporter, "convert", lambda *a: pytest.fail("converted before checking the intent"))

    # execute / assert
    with pytest.raises(UserInputError, match="tflite cannot realize quantize"):
        TfliteExporter().export(tiny_bert, IO, QuantSpec(**intent), None, tmp_path)


def test_signature_batch_follows_the_constructor(tiny_bert, fp32_export, tmp_path, monkeypatch):
    # setup: the conversion is fp32_export's; only the io.json and details depend on the batch here
    fp32_bytes = fp32_export[0].file.read_bytes()
    monkeypatch.setattr(TfliteExporter, "convert", lambda self, module, io, tmp: fp32_bytes)

    # execute
    result = TfliteExporter(batch=3).export(tiny_bert, IO, None, None, tmp_path)

    # assert
    assert IOSpec.read(tmp_path / IO_FILE).static_shape == (3, IO.max_seq_len)
    assert result.details["static_shape"] == [3, IO.max_seq_len]
    assert any("int32 [3, 64]" in n for n in result.notes)


def test_4bit_table_intent_is_realized_as_8bit_and_noted(tiny_bert, fp32_export, tmp_path, monkeypatch):
    # setup
    fp32_bytes = fp32_export[0].file.read_bytes()
    monkeypatch.setattr(TfliteExporter, "convert", lambda self, module, io, tmp: fp32_bytes)
    # execute
    res = TfliteExporter().export(tiny_bert, IO, QuantSpec(embedding_bits=4), None, tmp_path)
    # assert
    assert res.details["embedding_bits"] == 8
    assert any("embedding_bits 4 realized as 8" in n for n in res.notes)
