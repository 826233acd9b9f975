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
