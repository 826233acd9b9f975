"""Which recipe changes invalidate which cached steps: an artifact id covers what its output depends on, nothing else."""
from __future__ import annotations

import pytest

from edgecompress.artifact import artifact_id
from edgecompress.graph import bench_config, export_config, verify_config
from edgecompress.profiles import load_profile
from edgecompress.recipe import parse_recipe

BASE = {"export": {"formats": ["onnx", "pte"]}}


def _ids(overrides: dict, fmt: str = "pte") -> dict[str, str]:
    recipe = parse_recipe({**BASE, **overrides})
    quant = recipe.quantize.with_profile(load_profile(recipe.profile).int8)
    exp = artifact_id("export", export_config(recipe, fmt, "int8", quant, ["neg", "pos"]), ["student"])
    return {"export": exp,
            "verify": artifact_id("verify", verify_config(recipe, "data"), [exp, "student"]),
            "bench": artifact_id("bench", bench_config(recipe, "native"), [exp])}


CHANGES = [
    # (recipe change, steps whose id must change)
    ({"export": {**BASE["export"], "max_test_samples": 100}}, {"verify"}),
    ({"export": {**BASE["export"], "parity_shapes": [[2, 9]]}}, {"verify"}),
    ({"bench": {"threads": 2}}, {"verify", "bench"}),
    ({"bench": {"runs": 10}}, {"bench"}),
    ({"export": {**BASE["export"], "formats": ["pte"]}}, set()),
    ({"quantize": {"per_channel": False}}, {"export", "verify", "bench"}),
    ({"export": {**BASE["export"], "max_seq_len": 256}}, {"export", "verify", "bench"}),
    ({"bench": {"batch": 2}}, {"export", "verify", "bench"}),  # .pte bakes in its largest batch
]


@pytest.mark.parametrize("change,invalidated", CHANGES, ids=[str(c) for c, _ in CHANGES])
def test_a_recipe_change_invalidates_only_the_steps_that_depend_on_it(change, invalidated):
    # execute
    before, after = _ids({}), _ids(change)
    # assert
    assert {step for step in before if before[step] != after[step]} == invalidated


def test_bench_batch_does_not_re_export_a_format_with_dynamic_batch():
    # execute
    before, after = _ids({}, fmt="onnx"), _ids({"bench": {"batch": 2}}, fmt="onnx")
    # assert
    assert before["export"] == after["export"] and before["bench"] != after["bench"]


def _training_nodes(placement) -> list:
    """The graph's teacher and stage nodes of the default recipe, trained on `placement`."""
    from edgecompress.graph import Facts, run_graph
    from edgecompress.profiles import load_profile
    recipe = parse_recipe({**BASE})
    graph = run_graph(recipe, load_profile(recipe.profile), Facts({"weights": "w"}, "data", 2, ["neg", "pos"]),
                      placement)
    return [n for n in graph if n.job is None]


def test_the_device_stays_out_of_training_ids_and_a_reduced_precision_enters_them():
    # setup
    from edgecompress.compute import CPU, Placement
    # execute
    cpu = _training_nodes(CPU)
    gpu = _training_nodes(Placement("cuda:0", "fp32", "NVIDIA H200"))
    bf16 = _training_nodes(Placement("cuda:0", "bf16", "NVIDIA H200"))
    # assert: a CPU run hashes exactly the keys it always did (its ids are unchanged); a GPU in fp32 makes the same
    # artifacts; bf16 training makes other ones
    assert all("precision" not in n.config and "device" not in n.config for n in cpu)
    assert [n.id for n in cpu] == [n.id for n in gpu] == [n.id for n in _training_nodes(None)]
    assert all(n.config["precision"] == "bf16" for n in bf16) and len(bf16) == len(cpu) == 2  # teacher, distill
    assert not {n.id for n in bf16} & {n.id for n in cpu}
