"""The qemu-arm64 target: a tiny int8 BERT exported on this x86_64 host, verified on an emulated Cortex-A72.

The slow tests need the arm64 rootfs (targets/qemu-arm64/build_rootfs.sh, ~1 min, root + debootstrap +
qemu-user-static + network). The fixture builds it when it can and skips, printing why, when it cannot;
docs/qemu-arm64.md has the command to run them by hand. The fast tests need nothing.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edgecompress.errors import UserInputError
from edgecompress.transports.base import make_transport
from edgecompress.transports.targets import parse_target
from edgecompress.bench.on_target import label_agreement, predict_on_target
from edgecompress.transports.qemu import QemuArm64Transport, build_script, rootfs_path, rootfs_problem
from edgecompress.transports.reach import QemuReach
from tests._device import write_export_manifest

slow = pytest.mark.slow
LABEL_AGREEMENT_MIN = 0.99  # int8 on arm64 vs the same file on x86_64


# ---------------------------------------------------------------- fast: URL parsing and failures as data

def test_parse_target_qemu_arm64_with_options():
    # execute
    plain = parse_target("qemu-arm64")
    pi5 = parse_target("qemu-arm64?cpu=cortex-a76&rootfs=/srv/rootfs")
    # assert
    assert isinstance(plain, QemuReach) and plain.cpu == "cortex-a72" and plain.rootfs is None
    assert (pi5.cpu, pi5.rootfs) == ("cortex-a76", "/srv/rootfs")
    with pytest.raises(UserInputError, match="unknown option"):
        parse_target("qemu-arm64?cores=4")


@pytest.mark.parametrize("cpu", ["max", "host"])
def test_qemu_cpu_models_that_give_wrong_int8_results_are_refused(cpu):
    # execute / assert: "max" enables SME, under which the default int8 .pte gave sign-flipped logits
    with pytest.raises(UserInputError, match="wrong int8 results.*cortex-a72"):
        parse_target(f"qemu-arm64?cpu={cpu}")


def test_unbuilt_rootfs_is_a_connect_failure_naming_the_build_command(tmp_path, tiny_model):
    # setup
    from edgecompress.bench.harness import bench_file
    model, io = tiny_model
    reach = QemuReach(rootfs=str(tmp_path / "no-rootfs"))
    # execute
    with make_transport(reach) as t:
        res = t.exec(["true"], timeout_s=5)
        r = bench_file(model, io, "onnxruntime", transport=t, runs=1)
    # assert
    assert isinstance(t, QemuArm64Transport)
    assert not res.ok and "build_rootfs.sh" in res.stderr
    assert r["ok"] is False and r["stage"] == "connect" and "build_rootfs.sh" in r["error"]


# ---------------------------------------------------------------- slow: the emulated Pi

def _build_rootfs_or_skip() -> None:
    """Build the rootfs when this environment can; otherwise skip with the reason (printed, so CI logs show it)."""
    if rootfs_problem() is None:
        return
    reason = None
    if os.environ.get("EDGECOMPRESS_SKIP_QEMU_BUILD"):
        reason = "EDGECOMPRESS_SKIP_QEMU_BUILD is set"
    elif os.geteuid() != 0:
        reason = "building the arm64 rootfs needs root (debootstrap)"
    else:
        missing = [t for t in ("debootstrap", "qemu-aarch64-static", "dpkg-deb") if shutil.which(t) is None]
        if missing:
            reason = f"{', '.join(missing)} not installed (apt-get install debootstrap qemu-user-static)"
    if reason is None:
        t0 = time.perf_counter()
        p = subprocess.run(["bash", str(build_script()), str(rootfs_path())], capture_output=True, text=True,
                           timeout=1800)
        print(f"qemu-arm64 rootfs build: exit {p.returncode} in {time.perf_counter() - t0:.0f} s")
        if p.returncode != 0:
            reason = f"rootfs build failed (exit {p.returncode}): {p.stderr.strip().splitlines()[-1:]}"
    if reason is not None:
        msg = f"qemu-arm64 target unavailable: {reason}; run `sudo bash {build_script()}` then `pytest -m slow {__file__}`"
        print(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def rootfs():
    _build_rootfs_or_skip()
    return rootfs_path()


@pytest.fixture(scope="module")
def tiny_int8(tmp_path_factory):
    """A tiny BERT exported to int8 ONNX by the project's exporter (quantize_dynamic, per channel)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from edgecompress.export.base import IOSpec
    from edgecompress.recipe import QuantSpec
    from edgecompress.registry import EXPORTERS
    torch.manual_seed(0)
    # initializer_range 0.2 (not BERT's 0.02): a random tiny BERT then predicts both labels, so agreement means
    # something; with the default init every input gets the same label.
    cfg = BertConfig(vocab_size=1100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                     num_labels=2, initializer_range=0.2)
    model = BertForSequenceClassification(cfg).eval()
    io = IOSpec(vocab_size=1100, num_labels=2, max_seq_len=64)
    d = tmp_path_factory.mktemp("onnx-int8")
    EXPORTERS.get("onnx")().export(model, io, QuantSpec(per_channel=True), None, d)
    # An export artifact as `edgecompress bench` reads it (format/precision from manifest.json).
    write_export_manifest(d, "onnx", "int8", aid="tinyqemu")
    return model, d


def _samples(n: int, seed: int = 0) -> list[dict]:
    """Batch-of-one samples of varied length ([CLS] ids [SEP]), as the test split's tokenized sentences are."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randrange(4, 60)
        out.append({"input_ids": [[101] + [rng.randrange(1000, 1100) for _ in range(k)] + [102]],
                    "attention_mask": [[1] * (k + 2)]})
    return out


@slow
def test_tiny_int8_onnx_agrees_with_host_on_emulated_arm64(rootfs, tiny_int8):
    # setup
    import onnxruntime as ort
    import torch
    model, d = tiny_int8
    samples = _samples(64)
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    host_logits = [sess.run(None, {k: np.asarray(v, dtype=np.int64) for k, v in s.items()})[0][0] for s in samples]
    host = [int(np.argmax(r)) for r in host_logits]
    with torch.no_grad():
        ref = [int(model(input_ids=torch.tensor(s["input_ids"]), attention_mask=torch.tensor(s["attention_mask"]))
                   .logits.argmax(-1)[0]) for s in samples]
    # execute
    t0 = time.perf_counter()
    with make_transport(parse_target("qemu-arm64")) as t:
        r = predict_on_target(t, d / "model.onnx", d / "io.json", "onnxruntime", samples)
    took = time.perf_counter() - t0
    # assert
    assert r["ok"], r
    assert r["machine"] == "aarch64" and r["emulated"] is True and "cortex-a72" in r["emulator"]
    assert len(set(host)) == 2, "the tiny model must predict both labels for agreement to mean anything"
    agree_host = label_agreement(r["predictions"], host)
    agree_torch = label_agreement(r["predictions"], ref)
    diff = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(r["logits"], host_logits))
    print(f"emulated arm64: {len(samples)} samples in {took:.1f} s; agreement with host onnxruntime {agree_host:.4f}, "
          f"with host torch fp32 {agree_torch:.4f}; max |logit diff| vs host int8 {diff:.3g}")
    assert agree_host >= LABEL_AGREEMENT_MIN
    assert agree_torch >= 0.9  # int8 vs fp32: the exporter tests' bar for this tiny model is 0.75


@slow
def test_cli_bench_on_emulated_arm64_checks_outputs_and_marks_latency(rootfs, tiny_int8, tmp_path, capsys):
    # setup: expected.json = the host's int8 logits on inputs of a shape other than the export shape
    import onnxruntime as ort

    from edgecompress.cli import main
    _, d = tiny_int8
    inputs = _samples(1, seed=7)[0]
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {k: np.asarray(v, dtype=np.int64) for k, v in inputs.items()})[0]
    # atol: u8s8 NEON vs x86 kernels round differently (MiniLM int8 differed by up to 0.054 on real sentences).
    (d / "expected.json").write_text(json.dumps({"inputs": inputs, "logits": logits.tolist(), "atol": 0.1,
                                                 "argmax_must_match": True}))
    write_export_manifest(d, "onnx", "int8", aid="tinyqemu")  # expected.json is one of the artifact's files now
    out, md = tmp_path / "results.json", tmp_path / "summary.md"
    # execute
    code = main(["bench", str(d), "--profile", "rpi4", "--target", "qemu-arm64", "--runs", "5", "--warmup-runs", "1",
                 "--seq-len", "32", "--out", str(out), "--summary-md", str(md)])
    # assert
    err = capsys.readouterr().err
    (r,) = json.loads(out.read_text())["results"]
    assert r["ok"], r
    assert r["emulated"] is True and r["machine"] == "aarch64" and r["expected_check"]["argmax_agreement"] == 1.0
    assert code == 0, err  # p90/load/RSS budgets are skipped under emulation; file_mb still checked
    flat = " ".join(err.split())
    assert "* emulated: measured under qemu on this host, not a device latency" in flat
    summary = md.read_text()
    assert "**emulated** aarch64" in summary and "ms" in summary and "not device figures" in summary
