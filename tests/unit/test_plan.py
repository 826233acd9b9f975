"""`plan` refuses, before any work, every format x quantization x profile combination an exporter would refuse."""
from __future__ import annotations

import time

import pytest
import yaml

from edgecompress.errors import UserInputError
from edgecompress.formats import FORMATS
from edgecompress.plan import make_plan
from edgecompress.profiles import load_profile
from edgecompress.recipe import parse_recipe

REFUSED = [(f.name, r.field, r.value, r.example()) for f in FORMATS.values() for r in f.refuses]


@pytest.mark.parametrize("fmt,field,value,example", REFUSED, ids=[f"{f}-{k}-{v}" for f, k, v, _ in REFUSED])
def test_plan_refuses_what_the_exporter_refuses_in_under_two_seconds(fmt, field, value, example):
    # setup
    recipe = parse_recipe({"export": {"formats": [fmt]}, "quantize": {field: example}})
    # execute
    t0 = time.perf_counter()
    with pytest.raises(UserInputError) as e:
        make_plan(recipe)
    took = time.perf_counter() - t0
    # assert: one line naming the field, and what to use instead
    msg = str(e.value)
    assert f"quantize.{field}: {value}" in msg and ("use " in msg or "drop " in msg) and "\n" not in msg
    assert took < 2.0


def test_plan_accepts_fp32_only_exports_of_a_format_that_refuses_the_int8_intent():
    # setup: the intent is only realized for int8 files
    recipe = parse_recipe({"export": {"formats": ["ptl"], "precisions": ["fp32"]},
                           "quantize": {"activations": "static"}})
    # execute
    plan = make_plan(recipe)
    # assert
    assert "ptl-fp32" in plan.steps and plan.graph["ptl-fp32"].step == "export"


def test_profile_int8_flavour_that_makes_an_invalid_intent_is_refused(tmp_path):
    # setup: s8 activations x u8 weights has no kernel; the profile would fill it into the recipe's intent
    prof = load_profile("host").model_dump(mode="json")
    prof["int8"] = {"activation_type": "s8", "weight_type": "u8"}
    path = tmp_path / "odd.yaml"
    path.write_text(yaml.safe_dump(prof))
    recipe = parse_recipe({"profile": str(path), "export": {"formats": ["onnx"]}})
    # execute / assert
    with pytest.raises(UserInputError, match="int8 flavour does not fit quantize.*preset: manual"):
        make_plan(recipe)


def test_profile_without_a_runtime_for_an_exported_format_is_refused(tmp_path):
    # setup
    prof = load_profile("host").model_dump(mode="json")
    del prof["runtimes"]["ptl"]
    path = tmp_path / "noptl.yaml"
    path.write_text(yaml.safe_dump(prof))
    recipe = parse_recipe({"profile": str(path), "export": {"formats": ["onnx", "ptl"]}})
    # execute / assert
    with pytest.raises(UserInputError, match="has no runtime for .ptl"):
        make_plan(recipe)


def test_a_fit_format_that_refuses_the_int8_intent_is_refused_by_plan():
    # setup: the run itself exports onnx (fine); every fit candidate would be exported int8 as tflite
    recipe = parse_recipe({"export": {"formats": ["onnx"]}, "quantize": {"activations": "static"},
                           "fit": {"formats": ["tflite"]}})
    # execute / assert: one line naming the fit field
    with pytest.raises(UserInputError, match=r"^fit\.formats: tflite cannot realize quantize\.activations: static.*"
                                             r"drop tflite from fit\.formats"):
        make_plan(recipe)
