"""The on-device agent's inputs and outputs: random token ids, real samples read from a file, the rows a runtime
returns, and the check against the host's expected logits. Pushed beside agent.py (protocol.AGENT_FILES); standard
library only, like the agent.
"""
from __future__ import annotations

import json
import math
import random

from agent_runtimes import AgentError


def random_inputs(io, batch, seq_len, seed):
    """Random token ids in [min(1000, vocab-1), vocab): never BERT's special ids, so no accidental [PAD]; mask all ones.

    Same id range as IOSpec.example_inputs on the host, but Python's `random`, so no numpy is needed here.
    """
    rng = random.Random(seed)
    vocab = int(io["vocab_size"])
    low = min(1000, vocab - 1)
    out = {}
    for name in io["input_names"]:
        if "mask" in name:
            out[name] = [[1] * seq_len for _ in range(batch)]
        elif "token_type" in name:
            out[name] = [[0] * seq_len for _ in range(batch)]
        else:
            out[name] = [[rng.randrange(low, vocab) for _ in range(seq_len)] for _ in range(batch)]
    return out


def read_samples(path, io):
    """--inputs: {name: [[...]]} or a list of such dicts (real tokenized samples), cycled over the runs."""
    with open(path) as f:
        data = json.load(f)
    samples = data if isinstance(data, list) else [data]
    if not samples:
        raise AgentError(f"{path}: no samples")
    for i, s in enumerate(samples):
        missing = [n for n in io["input_names"] if n not in s]
        if missing:
            raise AgentError(f"{path}: sample {i} lacks inputs {missing}")
    return samples


def shape_of(sample):
    first = next(iter(sample.values()))
    return len(first), len(first[0])


def to_rows(out):
    """Any runtime's output (numpy array, torch tensor) -> list of rows of floats, without requiring numpy here."""
    if hasattr(out, "detach"):
        out = out.detach().float().numpy()
    rows = out.tolist() if hasattr(out, "tolist") else out
    if rows and not isinstance(rows[0], list):
        rows = [rows]
    return [[float(v) for v in row] for row in rows]


# ---------------------------------------------------------------- expected-output check

def check_expected(expected, got_rows):
    """Compare the first inference with reference logits; returns details, raises AgentError on a mismatch.

    A mismatch is an error, not a number: a runtime returning zeros (tflite-runtime int8 on numpy 2) is fast.
    """
    want = expected["logits"]
    if len(want) != len(got_rows) or any(len(a) != len(b) for a, b in zip(want, got_rows)):
        raise AgentError(f"output shape {[len(r) for r in got_rows]} != expected {[len(r) for r in want]}")
    flat = [v for row in got_rows for v in row]
    if any(math.isnan(v) or math.isinf(v) for v in flat):
        raise AgentError("output mismatch: runtime returned NaN/inf")
    if all(v == 0.0 for v in flat) and any(v != 0.0 for row in want for v in row):
        raise AgentError("output mismatch: runtime returned all zeros")
    max_abs = max(abs(a - b) for ra, rb in zip(want, got_rows) for a, b in zip(ra, rb))
    argmax = lambda row: max(range(len(row)), key=row.__getitem__)  # noqa: E731
    agree = sum(argmax(a) == argmax(b) for a, b in zip(want, got_rows)) / len(want)
    atol = expected.get("atol")
    min_agree = expected.get("min_argmax_agreement")
    if expected.get("argmax_must_match"):
        min_agree = 1.0
    if atol is None and min_agree is None:
        atol = 1e-3
    if atol is not None and max_abs > atol:
        raise AgentError(f"output mismatch: max abs diff {max_abs:.4g} > atol {atol} (argmax agreement {agree:.3f})")
    if min_agree is not None and agree < min_agree:
        raise AgentError(f"output mismatch: argmax agreement {agree:.3f} < {min_agree} (max abs diff {max_abs:.4g})")
    return {"max_abs_diff": round(max_abs, 6), "argmax_agreement": round(agree, 4)}


def expected_inputs(expected, io, batch, seq_len, seed):
    if "inputs" in expected:
        return expected["inputs"]
    return random_inputs(io, int(expected.get("batch", batch)), int(expected.get("seq_len", seq_len)),
                         int(expected.get("seed", seed)))


# ---------------------------------------------------------------- main
