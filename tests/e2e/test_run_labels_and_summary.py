"""What a newcomer reads: a string-labelled CSV's names reach labels.json, the report and `predict`, and the run's
last screen is the summary (best file, where the files are, the next commands), not the raw report."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from edgecompress.zoo import save_tiny_teacher, write_small_vader

NAMES = ["gloomy", "sunny"]  # not VADER's own names: what shows must come from this CSV


def _cli(tmp_path, *argv):
    env = {**os.environ, "EDGECOMPRESS_HOME": str(tmp_path / "home")}
    return subprocess.run([sys.executable, "-m", "edgecompress", *argv], capture_output=True, text=True, env=env,
                          timeout=900)


@pytest.fixture(scope="module")
def named_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("named")
    recipe = {
        "name": "named",
        "teacher": {"source": str(save_tiny_teacher(tmp_path / "teacher")),
                    "finetune": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 16}},
        "data": {"source": str(write_small_vader(tmp_path / "data", names=NAMES)), "max_seq_len": 64},
        "stages": [{"kind": "distill", "student": {"from_teacher_layers": [1]},
                    "train": {"epochs": 1, "learning_rate": 2e-3, "batch_size": 16}}],
        "export": {"formats": ["onnx"], "precisions": ["int8"], "max_seq_len": 64},
        "bench": {"threads": 1, "seq_len": 32, "warmup_runs": 1, "runs": 5},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = _cli(tmp_path, "run", str(path), "--out", str(tmp_path / "runs"))
    return tmp_path, path, proc


def test_the_last_screen_is_the_summary(named_run):
    # setup
    tmp_path, _, proc = named_run
    run_dir = tmp_path / "runs" / "named"
    bundle = run_dir / "artifacts" / "onnx-int8"
    # execute
    out = proc.stdout.rstrip().splitlines()
    # assert: the table with both rows, the verdict, the paths, then the next commands as the very last lines
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert "# edgecompress report" not in proc.stdout
    assert out[0].startswith("edgecompress run named: 1 file(s) in ")
    assert any("verifies" in ln and "% of teacher" in ln for ln in out[1:4])
    assert sum("teacher-onnx-fp32" in ln and "baseline" in ln for ln in out) == 1
    assert sum(ln.split()[:2] in (["onnx-int8", "python"], ["★", "onnx-int8"]) for ln in out) == 1
    assert any(ln.startswith(("★ best: onnx-int8, the fastest file that verifies", "No file verifies")) for ln in out)
    assert f"report:  {run_dir / 'report.html'}  (also report.md, report.json; messages: run.log)" in out
    assert f"classes: {', '.join(NAMES)}" in out
    assert out[-3:] == ["next:", f"  edgecompress predict {bundle} 'what a wonderful, moving film'",
                        f"  edgecompress bench {bundle} --profile rpi4 --target ssh://user@host"]


def test_string_label_names_reach_labels_json_and_the_report(named_run):
    # setup
    tmp_path, _, proc = named_run
    run_dir = tmp_path / "runs" / "named"
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    # execute
    labels = json.loads((run_dir / "artifacts" / "onnx-int8" / "labels.json").read_text())
    report = json.loads((run_dir / "report.json").read_text())
    md = (run_dir / "report.md").read_text()
    # assert
    assert labels == {"labels": NAMES} and report["labels"] == NAMES
    assert all(list(r["test_accuracy_by_class"]) == NAMES for r in report["rows"])
    assert "Classes: 0 = gloomy, 1 = sunny." in md and "| artifact | gloomy acc | sunny acc |" in md
    assert "Classes: 0 = gloomy, 1 = sunny." in (run_dir / "report.html").read_text()
    assert (report["best"] is None) == ("Best: **onnx-int8**" not in md)


def test_predict_prints_the_names(named_run):
    # setup
    tmp_path, _, proc = named_run
    bundle = tmp_path / "runs" / "named" / "artifacts" / "onnx-int8"
    # execute
    p = _cli(tmp_path, "predict", str(bundle), "what a wonderful, moving film", "a waste of time", "--json")
    # assert
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert len(rows) == 2 and all(r["label"] in NAMES and list(r["scores"]) == NAMES for r in rows)


def test_json_keeps_stdout_to_the_report_alone(named_run):
    # setup
    tmp_path, path, first = named_run
    assert first.returncode in (0, 1), first.stderr[-3000:]
    # execute: a rerun (every step reused) asked for JSON
    p = _cli(tmp_path, "run", str(path), "--out", str(tmp_path / "runs"), "--json")
    # assert
    report = json.loads(p.stdout)
    assert report["labels"] == NAMES and report["best"] in (None, "onnx-int8")
