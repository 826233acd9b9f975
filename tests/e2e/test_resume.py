"""kill -9 in the middle of a stage, rerun the same command: it resumes after the last finished step and ends
with the same result as a run that was never interrupted."""
import json
import os
import signal
import subprocess
import sys
import time

import yaml

from edgecompress.zoo import save_tiny_teacher, write_small_vader


def _cmd(recipe, out):
    return [sys.executable, "-m", "edgecompress", "run", str(recipe), "--out", str(out), "--quiet"]


def _student_sha(home):
    store = home / "store"
    (prune,) = [p for p in store.iterdir() if p.name.startswith("prune-")]
    return json.loads((prune / "manifest.json").read_text())["files"]["model/model.safetensors"]["sha256"]


def test_sigkill_mid_stage_then_rerun_resumes_and_matches(tmp_path):
    # setup
    recipe = {
        "name": "resume",
        "teacher": {"source": str(save_tiny_teacher(tmp_path / "teacher")),
                    "finetune": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 16}},
        "data": {"source": str(write_small_vader(tmp_path / "data", 640, 64)), "max_seq_len": 64},
        "stages": [{"kind": "distill", "student": {"from_teacher_layers": [1]},
                    "train": {"epochs": 4, "learning_rate": 2e-3, "batch_size": 8}},
                   {"kind": "prune", "sparsity": 0.2}],
        "export": {"formats": ["onnx"], "max_seq_len": 64},
        "bench": {"seq_len": 32, "warmup_runs": 1, "runs": 3},
    }
    rpath = tmp_path / "recipe.yaml"
    rpath.write_text(yaml.safe_dump(recipe))
    env_a = {**os.environ, "EDGECOMPRESS_HOME": str(tmp_path / "home_a")}
    env_b = {**os.environ, "EDGECOMPRESS_HOME": str(tmp_path / "home_b")}
    store_a = tmp_path / "home_a" / "store"

    # execute 1: start, wait until the distill stage is being written, SIGKILL
    proc = subprocess.Popen(_cmd(rpath, tmp_path / "runs_a"), env=env_a, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    killed_in = None
    while time.time() < deadline and proc.poll() is None:
        tmps = [p.name for p in store_a.glob(".tmp-*")] if store_a.is_dir() else []
        if any(n.endswith("-distill") for n in tmps):
            time.sleep(0.3)  # well inside the stage
            proc.send_signal(signal.SIGKILL)
            killed_in = "distill"
            break
        time.sleep(0.02)
    proc.wait()
    assert killed_in == "distill", f"never caught the distill stage in progress (rc={proc.returncode})"
    assert proc.returncode == -signal.SIGKILL
    assert [p.name.split("-")[0] for p in store_a.iterdir() if not p.name.startswith(".")] == ["teacher"]

    # execute 2: rerun the same command; and a clean uninterrupted run elsewhere
    rerun = subprocess.run(_cmd(rpath, tmp_path / "runs_a"), env=env_a, capture_output=True, text=True, timeout=900)
    clean = subprocess.run(_cmd(rpath, tmp_path / "runs_b"), env=env_b, capture_output=True, text=True, timeout=900)

    # assert: the rerun reused the teacher, removed the dead temp folder, and matches the clean run bit for bit
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert clean.returncode == 0, clean.stderr[-2000:]
    assert not list(store_a.glob(".tmp-*"))
    assert _student_sha(tmp_path / "home_a") == _student_sha(tmp_path / "home_b")
    ra = json.loads((tmp_path / "runs_a" / "resume" / "report.json").read_text())
    rb = json.loads((tmp_path / "runs_b" / "resume" / "report.json").read_text())
    assert [r["export_id"] for r in ra["rows"]] == [r["export_id"] for r in rb["rows"]]
    assert [r["test_accuracy"] for r in ra["rows"]] == [r["test_accuracy"] for r in rb["rows"]]
