"""compute: device and precision resolution (accelerator availability mocked: CI has no GPU), the plan's refusal of
a device this machine lacks, and which placements change a training step's artifact id."""
from __future__ import annotations

import pytest

from edgecompress import compute
from edgecompress.compute import ComputeCfg, Placement, resolve
from edgecompress.errors import UserInputError
from edgecompress.recipe import parse_recipe


@pytest.fixture
def machine(monkeypatch):
    """Pretend this machine has the given accelerators: fn(cuda=..., mps=..., bf16=...)."""
    import torch

    def set_(cuda: bool = False, mps: bool = False, bf16: bool = True, count: int = 1):
        monkeypatch.setattr(compute, "_cpu_only_torch", lambda: False)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count if cuda else 0)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA Test GPU")
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return set_


@pytest.mark.parametrize("cuda,mps,bf16,want", [
    (True, True, True, Placement("cuda:0", "bf16", "NVIDIA Test GPU")),   # CUDA first, bf16 where it has it
    (True, False, False, Placement("cuda:0", "fp32", "NVIDIA Test GPU")),  # pre-Ampere: fp32
    (False, True, True, Placement("mps", "fp32", "Apple MPS")),            # then MPS, fp32 by default
    (False, False, True, Placement("cpu", "fp32", "cpu")),                 # then the CPU, as before
])
def test_auto_picks_cuda_then_mps_then_cpu(machine, cuda, mps, bf16, want):
    # setup
    machine(cuda=cuda, mps=mps, bf16=bf16)
    # execute
    got = resolve(ComputeCfg())
    # assert
    assert got == want


@pytest.mark.parametrize("cfg,message", [
    ({"device": "cuda"}, "compute.device cuda: torch sees no CUDA device"),
    ({"device": "cuda:1"}, "compute.device cuda:1: torch sees no CUDA device"),
    ({"device": "mps"}, "compute.device mps: torch sees no MPS device"),
    ({"device": "cpu", "precision": "fp16"}, "compute.precision fp16 needs a CUDA or MPS device"),
])
def test_a_device_or_precision_the_machine_lacks_is_refused_in_one_line(machine, cfg, message):
    # setup
    machine(cuda=False, mps=False)
    # execute
    with pytest.raises(UserInputError) as e:
        resolve(ComputeCfg(**cfg))
    # assert
    assert str(e.value).startswith(message) and "use " in str(e.value) and "\n" not in str(e.value)


def test_a_cuda_index_past_the_last_gpu_is_refused(machine):
    # setup
    machine(cuda=True, count=2)
    # execute
    ok = resolve(ComputeCfg(device="cuda:1"))
    with pytest.raises(UserInputError) as e:
        resolve(ComputeCfg(device="cuda:2"))
    # assert
    assert ok.device == "cuda:1" and "has 2 CUDA device(s)" in str(e.value)


def test_bf16_on_a_gpu_without_it_is_refused_and_fp16_is_not(machine):
    # setup
    machine(cuda=True, bf16=False)
    # execute
    fp16 = resolve(ComputeCfg(device="cuda", precision="fp16"))
    with pytest.raises(UserInputError) as e:
        resolve(ComputeCfg(device="cuda", precision="bf16"))
    # assert
    assert fp16.precision == "fp16" and "has no bf16" in str(e.value)


def test_each_process_of_a_launch_takes_the_gpu_of_its_local_rank(machine, monkeypatch):
    # setup: what accelerate launch / torchrun set for the third process of four
    machine(cuda=True, count=4)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    # execute
    got = resolve(ComputeCfg(device="cuda"))
    # assert
    assert got.device == "cuda:2"


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "tpu", "CPU"])
def test_the_schema_refuses_a_device_name_it_does_not_know(device):
    # execute
    with pytest.raises(UserInputError) as e:
        parse_recipe({"compute": {"device": device}})
    # assert
    assert "compute.device" in str(e.value)


def test_the_cpu_only_torch_here_is_known_without_importing_torch():
    # setup: this CI machine runs a CPU-only torch build (torch/version.py says cuda = None)
    import subprocess
    import sys
    code = ("import sys; from edgecompress import compute; p = compute.resolve(); "
            "print(p.device, 'torch' in sys.modules)")
    # execute
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    # assert: auto resolved to the CPU and plan did not pay torch's ~2 s import for it
    assert out == ["cpu", "False"]


def test_plan_refuses_cuda_on_this_cpu_machine_before_any_work():
    # setup: CI has no GPU
    from edgecompress.plan import make_plan
    recipe = parse_recipe({"compute": {"device": "cuda"}, "export": {"formats": ["onnx"]}})
    # execute
    with pytest.raises(UserInputError) as e:
        make_plan(recipe)
    # assert
    assert "compute.device cuda" in str(e.value) and "\n" not in str(e.value)


def test_plan_says_where_the_trainings_run(capsys):
    # setup
    from pathlib import Path

    from edgecompress.plan import plan_command
    from edgecompress.recipe import DEFAULT_RECIPE_PATH
    # execute
    rc = plan_command(Path(DEFAULT_RECIPE_PATH), json_output=True)
    # assert
    import json
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["compute"] == {"device": "cpu", "precision": "fp32", "device_name": "cpu",
                                              "trainings": {"teacher:finetune": "fp32", "distill": "fp32"}}


def test_plan_names_the_precision_of_each_training_qat_in_fp32():
    # setup
    from edgecompress.compute import trainings
    recipe = parse_recipe({"quantize": {"qat": {"epochs": 1}}, "stages": [
        {"kind": "distill"}, {"kind": "prune", "method": "taylor", "sparsity": 0.3}]})
    # execute
    got = trainings(recipe, Placement("cuda:0", "fp16", "GPU"))
    # assert: a Taylor prune without recovery only scores (in fp32); QAT learns int8 rounding in fp32
    assert got["trainings"] == {"teacher:finetune": "fp16", "distill": "fp16", "prune": "fp32", "qat": "fp32"}


def test_only_a_reduced_precision_enters_a_training_step_id():
    # setup
    cpu, gpu_fp32, gpu_bf16 = Placement(), Placement("cuda:0", "fp32", "H200"), Placement("cuda:0", "bf16", "H200")
    # execute / assert: the same recipe makes the same artifact wherever it runs; bf16 training is another artifact
    assert cpu.id_part() == {} == gpu_fp32.id_part()
    assert gpu_bf16.id_part() == {"precision": "bf16"}
    assert gpu_bf16.record() == {"device": "cuda:0", "precision": "bf16", "device_name": "H200"}
