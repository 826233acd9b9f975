"""The exporter contract, for every format x precision: one file + io.json, loads in its own runtime, matches the
torch model at shapes other than the export shape, refuses too-long input with a UserInputError.

fp32 is judged by atol, int8 by SQNR / cosine / label agreement against the fp32 torch model. Each (format,
precision) is exported once per module (ExecuTorch lowering costs ~15 s; the .pte cases are marked slow). int8
files carry an 8-bit word-embedding table unless the intent says embeddings: false ("int8-fp32-table" below).
"""
from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from edgecompress.errors import UserInputError
from edgecompress.export.base import IO_FILE, IOSpec
from edgecompress.export.parity import compare
from edgecompress.recipe import QuantSpec
from edgecompress.registry import EXPORTERS

IO = IOSpec(vocab_size=1100, num_labels=2, max_seq_len=64, example_batch=2, example_seq_len=32)
# Batch and seq both differ from the export shape (2, 32); (6, 64) also hits the seq bound and, for .pte, a batch
# above its max_batch (split into chunks by the InferFn).
SHAPES = [(1, 17), (3, 41), (6, 64)]
FP32_ATOL = 1e-4
# Measured on the tiny BERT at SHAPES: SQNR 35-37 dB, cosine_min 0.996-0.9998. All-zero logits: 0 dB, cos 0.
INT8_MIN_SQNR_DB = 20.0
INT8_MIN_COSINE = 0.95  # per-row cosine of 2 tiny logits is jumpy (ptl 0.996); SQNR is the robust check
INT8_MIN_LABEL_AGREEMENT = 0.75

slow = pytest.mark.slow
ONNX_PTL = [pytest.param((f, p), id=f"{f}-{p}") for f in ("onnx", "ptl") for p in ("fp32", "int8")]
# .pte fp32 is exported with batch=4 (the dynamic batch axis inside the program); .pte int8 keeps the default
# batch=1, so the InferFn's row loop is exercised too. Two lowerings in total.
PTE = [pytest.param(("pte", p), id=f"pte-{p}", marks=slow) for p in ("fp32", "int8")]
CASES = ONNX_PTL + PTE
INT8 = [c for c in CASES if c.values[0][1] == "int8"]
# int8 with embeddings: false: the table stays fp32 (one more .pte lowering, slow).
FP32_TABLE = "int8-fp32-table"
TABLE_FORMATS = [pytest.param("ptl", id="ptl"), pytest.param("pte", id="pte", marks=slow)]
EMB8_OP = {"ptl": "quantized::embedding_byte", "pte": "quantized_decomposed::embedding_byte.out"}


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _Exports:
    """Exports each (format, precision) on first use and keeps it for the module, whatever the test order."""

    def __init__(self, model, tmp_path_factory):
        self.model, self.tmp, self.done = model, tmp_path_factory, {}

    def __call__(self, case: tuple[str, str]) -> SimpleNamespace:
        if case not in self.done:
            self.done[case] = self._export(*case)
        return self.done[case]

    def _export(self, fmt: str, precision: str) -> SimpleNamespace:
        cls = EXPORTERS.get(fmt)
        exporter = cls(batch=4) if (fmt, precision) == ("pte", "fp32") else cls()
        quant = {"fp32": None, "int8": QuantSpec(per_channel=True),
                 FP32_TABLE: QuantSpec(per_channel=True, embeddings=False)}[precision]
        out_dir = self.tmp.mktemp(f"{fmt}-{precision}")
        cwd = self.tmp.mktemp(f"{fmt}-{precision}-cwd")
        before = _state(self.model)
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(cwd)  # anything a toolchain drops into the CWD shows up here
            result = exporter.export(self.model, IO, quant, None, out_dir)
        after = _state(self.model)
        unchanged = before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
        return SimpleNamespace(fmt=fmt, precision=precision, exporter=exporter, result=result, out_dir=out_dir,
                               cwd_files=sorted(os.listdir(cwd)), model_unchanged=unchanged and not self.model.training,
                               infer=exporter.load(result.file, threads=1))


@pytest.fixture(scope="module")
def exports(tiny_bert, tmp_path_factory):
    return _Exports(tiny_bert, tmp_path_factory)


@pytest.mark.parametrize("case", CASES)
def test_export_writes_one_model_file_and_io_json(exports, case):
    # setup
    exported = exports(case)
    suffix = exported.exporter.suffix

    # execute
    files = sorted(os.listdir(exported.out_dir))

    # assert
    assert files == sorted([IO_FILE, f"model{suffix}"])
    assert exported.result.file == exported.out_dir / f"model{suffix}"
    assert IOSpec.read(exported.out_dir / IO_FILE) == IO
    assert exported.result.details["precision"] == exported.precision
    assert exported.cwd_files == []


@pytest.mark.parametrize("case", CASES)
def test_export_leaves_the_callers_model_untouched(exports, case):
    # setup / execute: the export snapshotted the model's weights around export()
    exported = exports(case)

    # assert
    assert exported.model_unchanged


@pytest.mark.parametrize("case", CASES)
def test_logits_match_torch_at_shapes_other_than_the_export_shape(exports, case, tiny_bert):
    # setup
    exported = exports(case)
    assert all((b, s) != (IO.example_batch, IO.example_seq_len) for b, s in SHAPES)

    # execute
    r = compare(tiny_bert, exported.infer, IO, shapes=SHAPES, seed=7)

    # assert
    assert r["n_rows"] == sum(b for b, _ in SHAPES)
    if exported.precision == "fp32":
        assert r["max_abs_diff"] < FP32_ATOL, r
    else:
        assert r["sqnr_db"] > INT8_MIN_SQNR_DB, r
        assert r["cosine_min"] > INT8_MIN_COSINE, r
        assert r["label_agreement"] >= INT8_MIN_LABEL_AGREEMENT, r
        assert r["max_abs_diff"] > 1e-6, "int8 output identical to fp32: quantization was not applied"


@pytest.mark.parametrize("case", INT8)
def test_int8_is_realized_in_the_file(exports, case):
    # setup
    exported = exports(case)

    # execute
    if exported.fmt == "onnx":
        import onnx
        ops = {n.op_type for n in onnx.load(str(exported.result.file)).graph.node}
    elif exported.fmt == "ptl":
        import torch.jit.mobile
        ops = set(torch.jit.mobile._export_operator_list(
            torch.jit.mobile._load_for_lite_interpreter(str(exported.result.file))))
    else:
        # the .pte holds XNNPACK blobs, not op names: count what PT2E inserted before lowering
        ops = {"quantize_per_channel"} if exported.result.details["quant_nodes"] > 0 else set()

    # assert
    expected = {"onnx": "MatMulInteger", "ptl": "quantized::linear_dynamic", "pte": "quantize_per_channel"}
    assert expected[exported.fmt] in ops, sorted(ops)
    assert exported.result.details["per_channel"] is True
    assert any("int8" in n for n in exported.result.notes)


@pytest.mark.parametrize("case", [c for c in CASES if c.values[0][0] == "onnx"])
def test_onnx_file_ships_without_the_exporters_debug_metadata(exports, case):
    # setup
    import onnx
    exported = exports(case)
    # execute
    nodes = onnx.load(str(exported.result.file)).graph.node
    # assert: torch.onnx's per-node stack traces and module scopes are not in the device file
    assert nodes and not any(n.metadata_props for n in nodes)


@pytest.mark.parametrize("case", CASES)
def test_too_long_input_raises_user_input_error(exports, case):
    # setup
    exported = exports(case)
    inputs = IO.example_inputs(1, IO.max_seq_len + 1)

    # execute / assert
    with pytest.raises(UserInputError, match=r"exceeds the exported max_seq_len 64"):
        exported.infer(inputs)


@pytest.mark.parametrize("case", CASES)
def test_output_is_fp32_batch_by_labels(exports, case):
    # setup
    exported = exports(case)
    inputs = IO.example_inputs(5, 1)  # seq 1: the smallest legal shape

    # execute
    out = exported.infer(inputs)

    # assert
    assert out.dtype == np.float32 and out.shape == (5, IO.num_labels)
    assert np.isfinite(out).all()


def test_ptl_load_sets_the_process_wide_torch_threads(exports):
    # setup
    exported = exports(("ptl", "fp32"))
    prev = torch.get_num_threads()

    # execute
    try:
        exported.exporter.load(exported.result.file, threads=2)
        got = torch.get_num_threads()
    finally:
        torch.set_num_threads(prev)

    # assert
    assert got == 2


@pytest.mark.parametrize("case", PTE)
def test_pte_program_carries_its_shape_bounds(exports, case):
    # setup
    exported = exports(case)
    from executorch.runtime import Runtime

    # execute
    meta = Runtime.get().load_program(exported.result.file).metadata("forward")

    # assert
    max_batch = exported.result.details["max_batch"]
    assert tuple(meta.input_tensor_meta(0).sizes()) == (max_batch, IO.max_seq_len)
    assert exported.result.details["dynamic_batch"] is (max_batch > 1)


@slow
def test_pte_load_sets_the_process_wide_xnnpack_threadpool(exports):
    # setup
    from executorch.extension.pybindings import portable_lib
    exported = exports(("pte", "fp32"))
    prev = portable_lib._threadpool_get_thread_count()

    # execute
    try:
        exported.exporter.load(exported.result.file, threads=2)
        got = portable_lib._threadpool_get_thread_count()
    finally:
        portable_lib._unsafe_reset_threadpool(prev)

    # assert
    assert got == 2


@slow
def test_pte_load_keeps_executorchs_native_lines_off_the_terminal(exports, tmp_path):
    # setup: outside any run (as `verify` and `bench` load), in a fresh process (its first load logs the CPU probe
    # and the threadpool size); pytest's own capture would stand in for fd 2, hence a subprocess
    import subprocess
    import sys
    exported = exports(("pte", "fp32"))
    code = ("import sys; from edgecompress.registry import EXPORTERS; "
            "EXPORTERS.get('pte')(batch=1).load(sys.argv[1], threads=2); print('loaded')")
    # execute
    p = subprocess.run([sys.executable, "-c", code, str(exported.result.file)], capture_output=True, text=True,
                       env={**os.environ, "EDGECOMPRESS_HOME": str(tmp_path)}, timeout=300)
    # assert: nothing of the runtime's on the terminal, its lines in the log
    assert p.returncode == 0 and p.stdout.strip() == "loaded", p.stderr[-2000:]
    assert "threadpool" not in p.stderr and "cpuinfo" not in p.stderr, p.stderr[-2000:]
    log = (tmp_path / "logs" / "native.log").read_text()
    assert "cpuinfo" in log or "threadpool" in log, log


@pytest.mark.parametrize("fmt", ["onnx", "ptl"])  # .pte per-tensor would cost a third lowering
def test_per_tensor_int8_is_honoured(fmt, tiny_bert, tmp_path):
    # setup
    exporter = EXPORTERS.get(fmt)()

    # execute
    result = exporter.export(tiny_bert, IO, QuantSpec(per_channel=False), None, tmp_path)
    r = compare(tiny_bert, exporter.load(result.file), IO, shapes=SHAPES[:2])

    # assert
    assert result.details["per_channel"] is False
    assert any("per tensor" in n for n in result.notes)
    assert r["sqnr_db"] > INT8_MIN_SQNR_DB - 5, r  # per-tensor is coarser (MiniLM: cos 0.91 vs 0.98)


def _ops(exported) -> set[str]:
    """The operators the file calls: the lite interpreter's list; for .pte those outside its XNNPACK delegate."""
    if exported.fmt == "ptl":
        import torch.jit.mobile
        return set(torch.jit.mobile._export_operator_list(
            torch.jit.mobile._load_for_lite_interpreter(str(exported.result.file))))
    return set(exported.result.details["kernel_ops"])


@pytest.mark.parametrize("fmt", TABLE_FORMATS)
def test_int8_carries_an_8bit_embedding_table_by_default(exports, fmt):
    # setup
    default, fp32_table = exports((fmt, "int8")), exports((fmt, FP32_TABLE))
    table_saving = IO.vocab_size * 32 * 3  # 4 -> 1 byte per value of the tiny BERT's 1100 x 32 word table

    # execute
    size, size_fp32_table = default.result.file.stat().st_size, fp32_table.result.file.stat().st_size

    # assert: the op is in the file and the table's bytes are gone; embeddings: false keeps both as they were
    assert EMB8_OP[fmt] in _ops(default) and EMB8_OP[fmt] not in _ops(fp32_table)
    assert size_fp32_table - size > 0.8 * table_saving, (size, size_fp32_table)
    assert default.result.details["embeddings_int8"] is True and fp32_table.result.details["embeddings_int8"] is False
    assert any("embeddings 8-bit rows" in n for n in default.result.notes)
    assert any("embeddings stay fp32 (embeddings: false)" in n for n in fp32_table.result.notes)


@pytest.mark.parametrize("fmt", TABLE_FORMATS)
def test_embeddings_false_meets_the_int8_bars(exports, fmt, tiny_bert):
    # setup
    exported = exports((fmt, FP32_TABLE))
    # execute
    r = compare(tiny_bert, exported.infer, IO, shapes=SHAPES, seed=7)
    # assert
    assert r["sqnr_db"] > INT8_MIN_SQNR_DB and r["label_agreement"] >= INT8_MIN_LABEL_AGREEMENT, r


@slow
def test_pte_attention_runs_without_portable_mask_ops(exports, tiny_bert):
    # setup: SDPA's decomposition left where/any/eq/logical_not on portable kernels (6 of the default student's
    # 10 ms); the exporter lowers an eager-attention copy instead, leaving the caller's model as it was. (An
    # expand_copy stays at dynamic batch: token_type_ids' [1, seq] -> [batch, seq], not in attention.)
    mask_ops = ("where", "any.", "eq.", "logical_not")

    # execute
    details = [exports(("pte", p)).result.details for p in ("fp32", "int8")]

    # assert
    for d in details:
        assert d["attention"] == "sdpa"
        assert not [op for op in d["non_delegated_ops"] if any(k in op for k in mask_ops)], d["non_delegated_ops"]
    assert "aten.expand_copy.default" not in details[1]["non_delegated_ops"]  # batch 1: the no-op expands dropped
    assert tiny_bert.config._attn_implementation == "sdpa"
    assert type(tiny_bert.bert.encoder.layer[0].attention.self).__name__ == "BertSdpaSelfAttention"


@slow
def test_native_runner_runs_the_8bit_table_with_the_python_runtimes_logits(exports, tmp_path):
    # setup: the product measures .pte with the native runner (targets/native), which links the quantized kernels
    import json
    import shutil
    import subprocess
    from edgecompress.device import native
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed (apt-get install g++): the native runner cannot be built")
    exported = exports(("pte", "int8"))
    samples = [IO.example_inputs(1, n, seed=n) for n in (17, 64)]
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps([{k: v.tolist() for k, v in s.items()} for s in samples]))
    argv = native.launch_argv(str(native.build_runner())) + [
        "--model", str(exported.result.file), "--io", str(exported.out_dir / IO_FILE), "--runtime", "executorch",
        "--threads", "1", "--warmup-runs", "0", "--runs", "2", "--inputs", str(inputs), "--predict"]

    # execute
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    # A fresh load: a method loaded earlier in this process may have lost its threadpool to a later load that
    # resized it (the Python runtime's pool is process-global), and executing it then crashes.
    infer = EXPORTERS.get("pte")(batch=1).load(exported.result.file)
    want = np.concatenate([infer(s) for s in samples])

    # assert
    assert p.returncode == 0 and out["ok"], out
    assert np.abs(np.asarray(out["logits"], dtype=np.float32) - want).max() <= 1e-4
