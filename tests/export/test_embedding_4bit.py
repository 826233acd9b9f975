"""quantize.embedding_bits: 4: the word-embedding table as 4-bit rows (a scale + zero point per 32 values) in .pte
(embedding_4bit), .ptl (packed rows unpacked with plain ops) and .onnx (GatherBlockQuantized); .tflite refuses it.

Each file is checked in its own runtime against the fp32 torch model, and against the same export at 8 bits: the
table's stored bytes shrink, the rest of the file does not grow by more than the lookup's code.
"""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from edgecompress.export.base import IO_FILE, IOSpec
from edgecompress.export.parity import compare
from edgecompress.export.quant.embedding import quantize_rows, unpacked_4bit_embedding
from edgecompress.formats import FORMATS
from edgecompress.recipe import QuantSpec
from edgecompress.registry import EXPORTERS

IO = IOSpec(vocab_size=1100, num_labels=2, max_seq_len=64, example_batch=2, example_seq_len=32)
SHAPES = [(1, 17), (3, 41)]
# Measured on the tiny BERT: 4-bit table SQNR 26.7-27.1 dB (8-bit 30-38), labels all agree.
MIN_SQNR_DB = 20.0
MIN_LABEL_AGREEMENT = 0.75
FORMATS_4BIT = [pytest.param("onnx", id="onnx"), pytest.param("ptl", id="ptl"),
                pytest.param("pte", id="pte", marks=pytest.mark.slow)]
TABLE_OP = {"onnx": "com.microsoft::GatherBlockQuantized", "pte": "quantized_decomposed.embedding_4bit"}


@pytest.fixture(scope="module")
def exports(tiny_bert, tmp_path_factory):
    done: dict = {}

    def get(fmt: str, bits: int, group: int = 32):
        if (fmt, bits, group) not in done:
            exporter = EXPORTERS.get(fmt)()
            quant = QuantSpec(per_channel=True, embedding_bits=bits, embedding_group_size=group)
            result = exporter.export(tiny_bert, IO, quant, None, tmp_path_factory.mktemp(f"{fmt}{bits}g{group}"))
            done[fmt, bits, group] = (exporter, result)
        return done[fmt, bits, group]
    return get


@pytest.mark.parametrize("bad", [{"embeddings": False}, {"weights": "codebook"}])
def test_4bit_table_needs_a_quantized_table_and_linear_weights(bad):
    # execute / assert
    with pytest.raises(ValueError, match="embedding_bits: 4"):
        QuantSpec(embedding_bits=4, **bad)
    assert QuantSpec(**bad).embedding_bits == 8


def test_a_group_size_needs_a_4bit_table():
    # execute / assert
    with pytest.raises(ValueError, match="embedding_group_size groups the values of a 4-bit table row"):
        QuantSpec(embedding_group_size=64)
    assert QuantSpec(embedding_bits=4, embedding_group_size=64).embedding_group_size == 64


@pytest.mark.parametrize("fmt", FORMATS_4BIT)
def test_the_group_size_reaches_each_formats_table(exports, fmt, tiny_bert):
    # setup: the tiny BERT's rows are 32 wide: groups of 16 are two scales a row where 32 is one
    (exporter, sixteen), (_, default) = exports(fmt, 4, 16), exports(fmt, 4)
    # execute
    r = compare(tiny_bert, exporter.load(sixteen.file), IO, shapes=SHAPES, seed=7)
    # assert: twice the qparams counted; the lookup in its runtime reads the rows as written
    t16, t32 = sixteen.details["embedding_table"], default.details["embedding_table"]
    assert (t16["group_size"], t32["group_size"]) == (16, 32)
    assert t16["stored_bytes"] > t32["stored_bytes"]
    if fmt == "onnx":
        import onnx
        gbq = next(n for n in onnx.load(str(sixteen.file)).graph.node if n.op_type == "GatherBlockQuantized")
        assert {a.name: a.i for a in gbq.attribute}["block_size"] == 16
    assert r["sqnr_db"] > MIN_SQNR_DB and r["label_agreement"] >= MIN_LABEL_AGREEMENT, r


def test_plan_refuses_a_group_size_that_does_not_divide_a_tables_width():
    # setup: the teacher's rows are 384 wide, the student's 320
    from edgecompress.errors import UserInputError
    from edgecompress.plan import make_plan
    from edgecompress.recipe import parse_recipe
    recipe = {"stages": [{"kind": "distill", "student": {"config": {"num_hidden_layers": 2, "hidden_size": 320}}}],
              "quantize": {"embedding_bits": 4, "embedding_group_size": 128}}
    # execute / assert
    with pytest.raises(UserInputError, match="embedding_group_size 128 does not divide the student's table width 320"):
        make_plan(parse_recipe(recipe))
    recipe["quantize"]["embedding_group_size"] = 64
    assert make_plan(parse_recipe(recipe)) is not None
    # a fit search's candidates are tables too: a 288-wide one has no whole groups of 64
    recipe["fit"] = {"widths": [192, 288], "depths": [2]}
    with pytest.raises(UserInputError, match="does not divide the fit candidates' table width 288; pick a smaller "
                                             "group or list fit.widths it divides"):
        make_plan(parse_recipe(recipe))


def test_every_format_accepts_4bit_tables():
    # execute / assert: .pte/.ptl/.onnx have 4-bit lookups; .tflite realizes the intent as 8 bit and notes it
    assert all(FORMATS[f].refusal(QuantSpec(embedding_bits=4)) is None for f in ("onnx", "ptl", "pte", "tflite"))


def test_packing_is_what_executorchs_embedding_4bit_reads():
    # setup: a width of 64 is two groups of 32 per row
    import executorch.exir.passes._quant_patterns_and_replacements  # noqa: F401 - defines the op
    torch.manual_seed(0)
    emb = torch.nn.Embedding(40, 64)
    stored, scales, zeros = quantize_rows(emb.weight, 4)
    ids = torch.tensor([[0, 5, 39], [7, 7, 1]])
    # execute
    ref = torch.ops.quantized_decomposed.embedding_4bit.default(stored, scales, zeros, -8, 7, ids)
    plain = unpacked_4bit_embedding(emb)(ids)
    # assert: the plain-op lookup (.ptl) reads the same bytes the same way; both stay near the fp32 rows
    assert stored.dtype == torch.uint8 and tuple(stored.shape) == (40, 32) and tuple(scales.shape) == (40, 2)
    assert torch.allclose(ref, plain, atol=1e-6)
    cos = torch.nn.functional.cosine_similarity(ref.view(-1, 64), emb.weight[ids.view(-1)], dim=1)
    assert cos.min() > 0.99, cos


@pytest.mark.parametrize("fmt", FORMATS_4BIT)
def test_4bit_table_is_smaller_and_close_to_torch_in_its_runtime(exports, fmt, tiny_bert):
    # setup
    (exporter, four), (_, eight) = exports(fmt, 4), exports(fmt, 8)
    # execute
    r = compare(tiny_bert, exporter.load(four.file), IO, shapes=SHAPES, seed=7)
    b4, b8 = four.details["file_bytes"], eight.details["file_bytes"]
    # assert
    assert four.details["embedding_bits"] == 4 and four.details["embedding_table"]["bits"] == 4
    assert four.details["embedding_table"]["group_size"] == 32
    assert b4["file"] < b8["file"] and b4["embedding_table"] < 0.7 * b8["embedding_table"], (b4, b8)
    assert b4["file"] == four.file.stat().st_size and b4["rest"] == b4["file"] - b4["embedding_table"]
    assert r["sqnr_db"] > MIN_SQNR_DB and r["label_agreement"] >= MIN_LABEL_AGREEMENT, r
    if fmt in TABLE_OP:
        assert four.details["embedding_table"]["op"] == TABLE_OP[fmt]


def test_onnx_file_calls_gather_block_quantized(exports):
    # setup
    import onnx
    _, four = exports("onnx", 4)
    # execute
    proto = onnx.load(str(four.file))
    gbq = [n for n in proto.graph.node if n.op_type == "GatherBlockQuantized"]
    # assert: one 4-bit lookup (the word table); position/token-type tables are not touched
    assert len(gbq) == 1 and gbq[0].domain == "com.microsoft"
    assert {a.name: a.i for a in gbq[0].attribute} == {"bits": 4, "block_size": 32, "gather_axis": 0,
                                                       "quantize_axis": 1}


@pytest.mark.slow
def test_native_runner_runs_the_4bit_table_with_the_python_runtimes_logits(exports, tmp_path):
    # setup: the native runner links libexecutorch_kernels_quantized, which has embedding_4bit.out
    from edgecompress.device import native
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed (apt-get install g++): the native runner cannot be built")
    exporter, four = exports("pte", 4)
    samples = [IO.example_inputs(1, n, seed=n) for n in (17, 64)]
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps([{k: v.tolist() for k, v in s.items()} for s in samples]))
    argv = native.launch_argv(str(native.build_runner())) + [
        "--model", str(four.file), "--io", str(four.file.parent / IO_FILE), "--runtime", "executorch",
        "--threads", "1", "--warmup-runs", "0", "--runs", "2", "--inputs", str(inputs), "--predict"]
    # execute
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    want = np.concatenate([EXPORTERS.get("pte")(batch=1).load(four.file)(s) for s in samples])
    # assert
    assert p.returncode == 0 and out["ok"], out
    assert np.abs(np.asarray(out["logits"], dtype=np.float32) - want).max() <= 1e-4
