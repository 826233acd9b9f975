"""Device-side test fixtures (imported by tests/conftest.py): a tiny hand-built ONNX classifier with BERT's IO names.

A hand-built graph (Gather -> masked mean -> MatMul) loads in milliseconds, where a torch.onnx.export of even a
2-layer BERT takes seconds; the agent only needs the IO contract (input_ids, attention_mask) -> logits.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

VOCAB, HIDDEN, LABELS = 1100, 8, 2
IO = {"vocab_size": VOCAB, "num_labels": LABELS, "max_seq_len": 128, "input_names": ["input_ids", "attention_mask"],
      "output_name": "logits", "input_dtype": "int64", "pad_token_id": 0, "example_batch": 2, "example_seq_len": 32}


def build_tiny_onnx(path: Path, zero_output: bool = False) -> None:
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((HIDDEN, LABELS)).astype(np.float32)
    inits = [numpy_helper.from_array(rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32), "emb"),
             numpy_helper.from_array(w * 0 if zero_output else w, "W"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "ax1"),
             numpy_helper.from_array(np.array([2], dtype=np.int64), "ax2")]
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["g"]),
             helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mf", "ax2"], ["mu"]),
             helper.make_node("Mul", ["g", "mu"], ["gm"]),
             helper.make_node("ReduceMean", ["gm", "ax1"], ["pooled"], keepdims=0),
             helper.make_node("MatMul", ["pooled", "W"], ["logits"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"]),
                        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", LABELS])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tiny")
    build_tiny_onnx(d / "model.onnx")
    (d / "io.json").write_text(json.dumps(IO))
    return d / "model.onnx", d / "io.json"


@pytest.fixture(scope="session")
def zero_model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("zero")
    build_tiny_onnx(d / "model.onnx", zero_output=True)
    return d / "model.onnx"


# ---------------------------------------------------------------- a real sshd on 127.0.0.1


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """Throwaway OpenSSH server on a free port (edgecompress.transports.loopback_sshd); yields an SshReach.

    Skipped only when the server binary is absent (.ci/install-system-deps installs it).
    """
    from edgecompress.transports.loopback_sshd import SSHD, loopback_sshd
    if not SSHD.exists():
        pytest.skip(f"{SSHD} not installed (apt-get install openssh-server; see .ci/install-system-deps)")
    with loopback_sshd(tmp_path_factory.mktemp("sshd")) as reach:
        yield reach


def write_export_manifest(d: Path, fmt: str, precision: str, aid: str = "0123456789abcdef",
                          metrics: dict | None = None, parents: list[str] | None = None) -> Path:
    """manifest.json for an export artifact folder as the store writes it: every file with its sha256 and size."""
    from edgecompress.artifact import MANIFEST, sha256_file
    files = {str(p.relative_to(d)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(d.rglob("*")) if p.is_file() and p.name != MANIFEST}
    (d / MANIFEST).write_text(json.dumps({"id": aid, "step": "export", "parents": parents or [],
                                          "config": {"format": fmt, "precision": precision},
                                          "files": files, "metrics": metrics or {}}))
    return d
