"""Multi-process distillation through accelerate on CPU (gloo): the wiring, not the speed.

`accelerate launch --multi_gpu` is accelerate's torch-elastic launcher; on a CPU-only torch it starts the processes
and Accelerator picks gloo (`--cpu` alone would start ONE process: accelerate's CPU multi-process path is mpirun).
Two processes, each taking its half of the batches: if gradients were not all-reduced the two students would
drift apart, so identical final weights on both ranks prove DDP is in the loop. The second test runs the real
entry point, `accelerate launch -m edgecompress run`, and checks that only rank 0 wrote the store.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

pytest.importorskip("accelerate")  # optional: the multi-process launcher (pip install accelerate==1.15.0)

WORKER = textwrap.dedent("""
    import os, sys, torch
    from edgecompress.compress.base import StageContext, Teacher
    from edgecompress.compress.distill import distill
    from edgecompress.modeling import load_tokenizer
    from edgecompress.recipe import DistillCfg, MatchCfg, StudentCfg, StudentArchCfg, TrainCfg
    from edgecompress.zoo import minilm_dir, small_vader, tiny_bert_with_real_vocab
    torch.set_num_threads(1)
    teacher = tiny_bert_with_real_vocab()
    tokenizer = load_tokenizer(minilm_dir())
    ctx = StageContext(small_vader(64, 16), 32, seed=0)
    cfg = DistillCfg(student=StudentCfg(config=StudentArchCfg(num_hidden_layers=1, hidden_size=16)),
                     matches=[MatchCfg(teacher_layer=1, student_layer=0, feature="hidden"),
                              MatchCfg(teacher_layer=1, student_layer=0, feature="attention", loss="kl")],
                     train=TrainCfg(epochs=1, learning_rate=1e-2, batch_size=8, warmup_ratio=0.0))
    res = distill(teacher, tokenizer, cfg, ctx, Teacher(teacher, tokenizer))
    student = res.model
    assert res.metrics["distributed"], "WORLD_SIZE did not reach the loop"
    torch.save({k: v.clone() for k, v in student.state_dict().items()}, os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.pt"))
""")


def _env(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
            "OMP_WAIT_POLICY": "PASSIVE", "EDGECOMPRESS_HOME": str(tmp_path / "home")}


def _free_port() -> str:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_two_cpu_processes_end_with_identical_student_weights(tmp_path):
    # setup
    import torch
    (tmp_path / "worker.py").write_text(WORKER)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", _free_port(),
           str(tmp_path / "worker.py"), str(tmp_path)]
    # execute
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path), timeout=300)
    # assert
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert a["bert.encoder.layer.0.attention.self.query.weight"].shape == (16, 16)


def test_accelerate_launch_runs_the_pipeline_and_only_rank0_writes(tmp_path):
    # setup: a tiny teacher with its head (no fine-tune), one distill stage, fp32 ONNX only
    from edgecompress.zoo import save_tiny_teacher, write_small_vader
    recipe = {"name": "ddp",
              "teacher": {"source": str(save_tiny_teacher(tmp_path / "teacher")), "finetune": None},
              "data": {"source": str(write_small_vader(tmp_path / "data", 64, 16)), "max_seq_len": 32},
              "stages": [{"kind": "distill", "student": {"from_teacher_layers": [1]},
                          "matches": [{"teacher_layer": 1, "student_layer": 0, "feature": "hidden"}],
                          "train": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 8}}],
              "export": {"formats": ["onnx"], "precisions": ["fp32"], "max_seq_len": 32, "parity_shapes": [[1, 9]]},
              "bench": {"threads": 1, "seq_len": 16, "warmup_runs": 1, "runs": 3}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", _free_port(),
           "-m", "edgecompress", "run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "runs"), "--quiet"]
    # execute
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    # assert
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = tmp_path / "home" / "store"
    distills = sorted(p.name for p in store.iterdir() if p.name.startswith("distill-"))
    assert len(distills) == 1
    metrics = json.loads((store / distills[0] / "metrics.json").read_text())
    assert metrics["distributed"] is True
    report = json.loads((tmp_path / "runs" / "ddp" / "report.json").read_text())
    assert [r["label"] for r in report["rows"]] == ["teacher-onnx-fp32", "onnx-fp32"]
