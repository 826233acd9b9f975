"""The bench agent on .tflite: pads to the file's static signature like the host loader, and a runtime that returns
zeros (tflite-runtime 2.14 with numpy 1.26 on int8 models) is caught by the expected-output check as an error.

The model is a tiny embedding -> masked mean -> linear classifier converted with the real TfliteExporter (one
litert-torch conversion, ~10 s plus the jax import), so the agent reads a real exporter's io.json and .tflite.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgecompress.bench.harness import bench_file
from edgecompress.device.protocol import agent_path
from edgecompress.export.base import IOSpec

VOCAB, HIDDEN, LABELS, MAX_SEQ = 1100, 8, 2, 48
IO = IOSpec(vocab_size=VOCAB, num_labels=LABELS, max_seq_len=MAX_SEQ, pad_token_id=0)


def _agent():
    spec = importlib.util.spec_from_file_location("bench_agent_tfl", agent_path("agent_runtimes.py"))
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)
    return agent


class _TinyClassifier:
    """Built lazily (torch import) in the fixture; HF-like call signature, returns (logits,)."""

    @staticmethod
    def build():
        import torch

        class Tiny(torch.nn.Module):
            def __init__(self):
                super().__init__()
                torch.manual_seed(0)
                self.emb = torch.nn.Embedding(VOCAB, HIDDEN)
                self.head = torch.nn.Linear(HIDDEN, LABELS)

            def forward(self, input_ids, attention_mask, return_dict=False):
                m = attention_mask.to(torch.float32).unsqueeze(-1)
                pooled = (self.emb(input_ids) * m).sum(1) / m.sum(1).clamp(min=1.0)
                return (self.head(pooled),)

        return Tiny().eval()


@pytest.fixture(scope="module")
def tflite_model(tmp_path_factory) -> tuple[Path, Path]:
    from edgecompress.export.tflite import TfliteExporter
    d = tmp_path_factory.mktemp("tflite-agent")
    res = TfliteExporter().export(_TinyClassifier.build(), IO, None, None, d)
    return res.file, d / "io.json"


def _expected_from_host(model: Path, tmp_path: Path, batch=3, seq_len=16, **extra) -> Path:
    """Reference logits from the host InferFn (exporter.load), as the pipeline writes expected.json."""
    from edgecompress.export.tflite import TfliteExporter
    inputs = IO.example_inputs(batch, seq_len, seed=5)
    logits = TfliteExporter().load(model)(inputs)
    p = tmp_path / "expected.json"
    p.write_text(json.dumps({"inputs": {k: v.tolist() for k, v in inputs.items()}, "logits": logits.tolist(), **extra}))
    return p


FAKE_TFLITE_RUNTIME = '''
"""Stands in for tflite-runtime 2.14 + numpy 1.26 on an int8 model: loads, runs, fast, and every output is 0."""
import numpy as np

SEQ = {seq}


class Interpreter:
    def __init__(self, model_path=None, num_threads=None):
        self._shape = np.array([1, SEQ], dtype=np.int32)

    def allocate_tensors(self):
        pass

    def get_input_details(self):
        return [{{"name": "serving_default_" + n, "index": i, "shape": self._shape, "shape_signature": self._shape,
                 "dtype": np.int32}} for i, n in enumerate(("attention_mask", "input_ids"))]

    def get_output_details(self):
        return [{{"name": "StatefulPartitionedCall:0", "index": 2, "shape": np.array([1, 2]), "dtype": np.float32}}]

    def set_tensor(self, index, value):
        assert value.shape == tuple(self._shape) and value.dtype == np.int32

    def invoke(self):
        pass

    def get_tensor(self, index):
        return np.zeros((1, 2), dtype=np.float32)
'''


@pytest.fixture
def pi_image_with_broken_tflite_runtime(tmp_path, monkeypatch):
    """PYTHONPATH where ai-edge-litert is absent (import fails, as on a stock Pi image) and tflite_runtime is the fake."""
    root = tmp_path / "pypath"
    (root / "ai_edge_litert").mkdir(parents=True)
    (root / "ai_edge_litert" / "__init__.py").write_text("raise ImportError('ai-edge-litert not installed here')\n")
    (root / "tflite_runtime").mkdir()
    (root / "tflite_runtime" / "__init__.py").write_text("")
    (root / "tflite_runtime" / "interpreter.py").write_text(FAKE_TFLITE_RUNTIME.format(seq=MAX_SEQ))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    return root


def test_agent_runs_tflite_padded_to_the_signature_and_matches_the_host(tflite_model, tmp_path):
    # setup
    model, io = tflite_model
    expected = _expected_from_host(model, tmp_path, atol=1e-5, argmax_must_match=True)

    # execute: batch 3, seq 16 against a [1, 48] signature: padded and looped over rows
    r = bench_file(model, io, "tflite", runs=3, warmup_runs=1, batch=3, seq_len=16, expected_json=expected)

    # assert
    assert r["ok"] is True, r
    assert r["runtime_version"].startswith("ai-edge-litert ")
    assert r["runtime_threads"]["static_shape"] == [1, MAX_SEQ] and r["runtime_threads"]["num_threads"] == 1
    assert r["expected_check"]["max_abs_diff"] <= 1e-5 and r["expected_check"]["argmax_agreement"] == 1.0


def test_zeros_from_tflite_runtime_are_an_error_not_a_number(tflite_model, tmp_path,
                                                              pi_image_with_broken_tflite_runtime):
    # setup
    model, io = tflite_model
    expected = _expected_from_host(model, tmp_path, batch=1, seq_len=16, atol=1e-3)

    # execute
    r = bench_file(model, io, "tflite", runs=3, warmup_runs=0, batch=1, seq_len=16, expected_json=expected)

    # assert
    assert r["ok"] is False and "p50_ms" not in r, r
    assert "all zeros" in r["error"]


def test_zeros_without_expected_would_have_been_a_number(tflite_model, pi_image_with_broken_tflite_runtime):
    # setup: the same broken runtime with no --expected: the agent times it happily (why the check exists)
    model, io = tflite_model

    # execute
    r = bench_file(model, io, "tflite", runs=3, warmup_runs=0, batch=1, seq_len=16)

    # assert
    assert r["ok"] is True and r["runtime_version"].startswith("tflite-runtime"), r


def test_corrupted_expected_output_is_a_mismatch(tflite_model, tmp_path):
    # setup
    model, io = tflite_model
    good = json.loads(_expected_from_host(model, tmp_path, atol=1e-4).read_text())
    good["logits"] = [[v + 0.5 for v in row] for row in good["logits"]]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(good))

    # execute
    r = bench_file(model, io, "tflite", runs=3, warmup_runs=0, batch=3, seq_len=16, expected_json=bad)

    # assert
    assert r["ok"] is False and "output mismatch: max abs diff" in r["error"]


def test_agent_padding_rule_is_the_exporters():
    # setup
    from edgecompress.export.tflite import pad_rows
    agent = _agent()
    ids = [[1005, 1006, 1007], [1008, 0, 0], [1009, 1010, 1011]]
    mask = [[1, 1, 1], [1, 0, 0], [1, 1, 1]]

    # execute
    chunks, n = agent.tflite_chunks({"input_ids": ids, "attention_mask": mask}, ["input_ids", "attention_mask"],
                                    (2, 6), {"input_ids": 7, "attention_mask": 0})
    ref, n_ref = pad_rows(np.array(ids), np.array(mask), (2, 6), pad_token_id=7)

    # assert
    assert n == n_ref == 3 and len(chunks) == len(ref) == 2
    for c, (ri, rm) in zip(chunks, ref):
        assert c["input_ids"] == ri.tolist() and c["attention_mask"] == rm.tolist()
