"""The whole pipeline on a tiny teacher (saved like a user's local model) and a small slice of real data."""
import json
import shutil
import subprocess
import sys

import pytest
import yaml

from edgecompress.zoo import save_tiny_teacher, write_small_vader


def _recipe(tmp_path, formats):
    return {
        "name": "tiny",
        "teacher": {"source": str(save_tiny_teacher(tmp_path / "teacher")),
                    "finetune": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 16}},
        "data": {"source": str(write_small_vader(tmp_path / "data")), "max_seq_len": 64},
        "stages": [{"kind": "distill", "student": {"from_teacher_layers": [1]},
                    "train": {"epochs": 1, "learning_rate": 2e-3, "batch_size": 16}},
                   {"kind": "prune", "sparsity": 0.2}],
        "export": {"formats": formats, "precisions": ["int8"], "max_seq_len": 64},
        "bench": {"threads": 1, "seq_len": 32, "warmup_runs": 1, "runs": 5},
    }


def _run(tmp_path, recipe_path, extra_env=None):
    env = {**__import__("os").environ, "EDGECOMPRESS_HOME": str(tmp_path / "home"), **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "edgecompress", "run", str(recipe_path), "--out", str(tmp_path / "runs"),
                           "--json"], capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("e2e")
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(_recipe(tmp_path, ["onnx", "ptl", "pte", "tflite"])))
    proc = _run(tmp_path, recipe_path)
    return tmp_path, recipe_path, proc


def test_tiny_run_writes_report_rows_for_every_format(tiny_run):
    # setup
    tmp_path, _, proc = tiny_run
    # assert
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "runs" / "tiny" / "report.json").read_text())
    labels = [r["label"] for r in report["rows"]]
    assert labels == ["teacher-onnx-fp32", "onnx-int8", "ptl-int8", "pte-int8", "tflite-int8"]
    for r in report["rows"]:
        assert r["p50_ms"] > 0 and r["p90_ms"] >= r["p50_ms"] and r["peak_rss_mb"] > 0 and r["file_mb"] > 0
        assert 0 <= r["test_accuracy"] <= 1
        assert r["label_agreement_vs_torch"] >= 0.9
    assert (tmp_path / "runs" / "tiny" / "report.md").read_text().count("| onnx-int8 | onnxruntime |") == 1
    assert report["student"]["sparsity"] == pytest.approx(0.2, abs=0.01)
    # third-party noise (torch.onnx's torchvision notices, warnings) is kept in the run folder, not on the terminal
    log = (tmp_path / "runs" / "tiny" / "run.log").read_text()
    assert "torchvision" in log and "torchvision" not in proc.stderr and "Warning" not in proc.stderr
    assert {r["label"]: r["runner"] for r in report["rows"]}["pte-int8"] == "native"
    for name in ("teacher", "1-distill", "2-prune", "onnx-int8", "ptl-int8"):
        assert (tmp_path / "runs" / "tiny" / "artifacts" / name / "manifest.json").is_file()
    # where each training step ran is in its manifest (CI has no GPU: the CPU, fp32)
    for name in ("teacher", "1-distill", "2-prune"):
        manifest = json.loads((tmp_path / "runs" / "tiny" / "artifacts" / name / "manifest.json").read_text())
        assert {k: manifest["metrics"][k] for k in ("device", "precision")} == {"device": "cpu", "precision": "fp32"}


def test_rerun_reuses_every_finished_step(tiny_run):
    # setup
    tmp_path, recipe_path, first = tiny_run
    assert first.returncode == 0, first.stderr[-3000:]
    store = tmp_path / "home" / "store"
    before = {p.name: (p / "manifest.json").stat().st_mtime_ns for p in store.iterdir() if not p.name.startswith(".")}
    # execute
    second = _run(tmp_path, recipe_path)
    # assert: nothing recomputed (no new artifact, no manifest rewritten), same artifact ids
    assert second.returncode == 0, second.stderr[-3000:]
    assert {p.name: (p / "manifest.json").stat().st_mtime_ns for p in store.iterdir() if not p.name.startswith(".")} == before
    ids = lambda p: [(r["export_id"], r["bench_id"]) for r in json.loads(p.stdout)["rows"]]
    assert ids(first) == ids(second)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/install-system-deps installs it)")
def test_report_html_renders_the_plot_in_headless_chromium(tiny_run, tmp_path):
    # setup
    run_dir = tiny_run[0] / "runs" / "tiny"
    shot = tmp_path / "shot.png"
    # execute: the flags keep Chromium off the (closed) network
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,800", f"--screenshot={shot}",
                    (run_dir / "report.html").as_uri()], capture_output=True, timeout=120)
    # assert: the page rendered, and the region where the inline PNG sits has the plot's coloured markers
    import matplotlib.image as mpimg
    img = mpimg.imread(str(shot))[:, :, :3]
    plot = img[100:600, 20:750]
    blue = (plot[:, :, 2] > 0.6) & (plot[:, :, 0] < 0.6)
    assert blue.mean() > 0.001, "no plot markers visible in the rendered report"
    assert 'id="pareto"' in (run_dir / "report.html").read_text()


PREDICT_NO_TORCH = """
import json, sys
from edgecompress.cli import main
code = main(["predict", sys.argv[1], "what a wonderful, moving film", "this was a waste of time", "--json"])
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules}))
"""


@pytest.mark.parametrize("fmt", ["onnx", "ptl", "pte", "tflite"])
def test_every_export_is_a_bundle_that_predicts_without_torch(tiny_run, fmt):
    # setup
    tmp_path, _, proc = tiny_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    bundle = tmp_path / "runs" / "tiny" / "artifacts" / f"{fmt}-int8"
    # execute
    p = subprocess.run([sys.executable, "-c", PREDICT_NO_TORCH, str(bundle)], capture_output=True, text=True,
                       timeout=300, env={**__import__("os").environ, "EDGECOMPRESS_HOME": str(tmp_path / "home")})
    # assert: the bundle carries what an app needs, and predicting imports neither torch nor transformers
    for name in ("tokenizer.json", "labels.json", "README.txt", "io.json", "expected.json"):
        assert (bundle / name).is_file(), name
    lines = [json.loads(ln) for ln in p.stdout.strip().splitlines()]
    assert lines[-1] == {"code": 0, "torch": False, "transformers": False}, p.stderr[-2000:]
    rows = lines[:-1]
    labels = json.loads((bundle / "labels.json").read_text())["labels"]
    assert len(rows) == 2 and all(r["label"] in labels and 0 < r["score"] <= 1 for r in rows)
    assert "edgecompress predict" in (bundle / "README.txt").read_text()


def test_plan_prints_the_graph_that_run_executes(tiny_run):
    # setup
    tmp_path, recipe_path, proc = tiny_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    # execute
    plan = subprocess.run([sys.executable, "-m", "edgecompress", "plan", str(recipe_path), "--json"],
                          capture_output=True, text=True, timeout=120)
    # assert: the same nodes, in the same order, with the same ids and parents, as the run's steps
    assert plan.returncode == 0, plan.stderr
    graph = json.loads(plan.stdout)["graph"]
    lineage = json.loads((tmp_path / "runs" / "tiny" / "report.json").read_text())["lineage"]
    assert [(n["label"], n["step"], n["id"]) for n in graph] == [(s["label"], s["step"], s["id"]) for s in lineage]
    by_label = {n["label"]: n for n in graph}
    for n in graph:
        assert [by_label[p]["id"] for p in n["parents"]] == next(s["parents"] for s in lineage if s["id"] == n["id"])
    for s in lineage:
        assert (tmp_path / "home" / "store" / f"{s['step']}-{s['id']}" / "manifest.json").is_file()
