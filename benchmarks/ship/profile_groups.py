"""Where a forward's time goes, per op group, for a .pte (ExecuTorch ETDump) and a .onnx (onnxruntime profiler).

Both profiles are grouped with one table (GROUPS) so a row compares like with like across runtimes; every op name
seen is kept in the raw per-op list of the result, and an op no rule matches lands in "other" under its own name.
"overhead" is what the runtime spends outside the ops it reports: the method total minus the ops' sum.
"""
from __future__ import annotations

import collections
import json
import tempfile
from pathlib import Path

import numpy as np

from edgecompress.export.iospec import read_io_beside

# (group, substrings of an op name, lower case); first match wins. ExecuTorch non-delegated ops appear as
# native_call_<op>.out, XNNPACK's as its operator names ("Fully Connected (NC, QDU8, F32, QC8W) GEMM #1").
GROUPS = (
    ("int8 linear (matmul)", ("dynamicquantizematmul", "matmulintegertofloat", "matmulinteger", "fully connected")),
    ("quantize / dequantize", ("dynamicquantizelinear", "dequantizelinear", "quantizelinear", "convert (nc")),
    ("attention matmul + softmax", ("fusedmatmul", "batch matrix multiply", "softmax", "matmul")),
    ("layernorm", ("layernorm", "layer_norm")),
    ("gelu", ("gelu", "erf")),
    ("embedding lookup", ("gather", "embedding")),
    ("attention mask (where/any/eq/expand)", ("where", "any", "eq.", "equal", "logical_not", "not", "expand",
                                               "full_like", "scalar_tensor")),
    ("elementwise (add/mul/div/sub/tanh)", ("add", "mul", "div", "sub", "tanh")),
    ("layout (transpose/reshape/slice/copy)", ("transpose", "reshape", "slice", "concat", "shape", "cast",
                                                "unsqueeze", "select", "view", "copy", "dim_order")),
)


def group_of(op: str) -> str:
    low = op.lower().removeprefix("native_call_")
    for group, keys in GROUPS:
        if any(k in low for k in keys):
            return group
    return f"other: {op}"


def summarize(per_op_ms: dict[str, float], total_ms: float, calls: dict[str, float]) -> dict:
    groups: dict[str, float] = collections.defaultdict(float)
    for op, ms in per_op_ms.items():
        groups[group_of(op)] += ms
    groups["overhead (runtime, outside ops)"] = max(0.0, total_ms - sum(per_op_ms.values()))
    return {"total_ms": round(total_ms, 3),
            "groups_ms": {g: round(v, 3) for g, v in sorted(groups.items(), key=lambda kv: -kv[1])},
            "ops": [{"op": op, "group": group_of(op), "ms": round(ms, 4), "calls": calls[op]}
                    for op, ms in sorted(per_op_ms.items(), key=lambda kv: -kv[1])]}


def _inputs(seq: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.random.default_rng(1).integers(min(1000, vocab - 1), vocab, (1, seq)).astype(np.int64)
    return ids, np.ones((1, seq), np.int64)


def pte_profile(path: Path, runs: int, seq: int) -> dict:
    """ETDump of `runs` forwards in the Python runtime: per op, the median over runs of its summed time per forward."""
    import torch
    import executorch.kernels.quantized  # noqa: F401 - the 8-bit table's embedding_byte
    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    portable_lib._unsafe_reset_threadpool(1)
    vocab = read_io_beside(Path(path)).vocab_size
    program = Runtime.get().load_program(Path(path), enable_etdump=True)
    method = program.load_method("forward")
    ids, mask = (torch.from_numpy(a) for a in _inputs(seq, vocab))
    for _ in range(runs):
        method.execute([ids, mask])
    with tempfile.TemporaryDirectory() as tmp:
        program.write_etdump_result_to_file(f"{tmp}/run.etdp", f"{tmp}/debug.bin")
        inspector = Inspector(etdump_path=f"{tmp}/run.etdp")
    per_op: dict[str, float] = collections.defaultdict(float)
    calls: dict[str, float] = collections.defaultdict(float)
    total = 0.0
    for block in inspector.event_blocks:
        for e in block.events:
            if e.perf_data is None:
                continue
            if e.name == "Method::execute":
                total = e.perf_data.p50
            elif e.name not in ("DELEGATE_CALL", "OPERATOR_CALL") and block.name != "Default":
                per_op[e.name] += e.perf_data.p50  # one event per op instance; p50 over the runs
                calls[e.name] += 1
    return summarize(per_op, total, calls)


def onnx_profile(path: Path, runs: int, seq: int) -> dict:
    """onnxruntime's profiler over `runs` forwards (1 thread): per op type, the mean time per forward."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        so.enable_profiling = True
        so.profile_file_prefix = f"{tmp}/ort"
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        vocab = read_io_beside(Path(path)).vocab_size
        ids, mask = _inputs(seq, vocab)
        for _ in range(runs):
            sess.run(None, {"input_ids": ids, "attention_mask": mask})
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: dict[str, float] = collections.defaultdict(float)
    calls: dict[str, float] = collections.defaultdict(float)
    total = 0.0
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 1000 / runs
            calls[e["args"]["op_name"]] += 1 / runs
        elif e.get("cat") == "Session" and e["name"] == "model_run":
            total += e["dur"] / 1000 / runs
    return summarize(per_op, total, calls)
