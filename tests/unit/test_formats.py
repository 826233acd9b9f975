"""The format table is the one place format facts live: every reader agrees with it."""
from __future__ import annotations

import importlib.util
import typing

import pytest

from edgecompress.formats import FORMAT_NAMES, FORMATS
from edgecompress.recipe import ExportCfg, parse_recipe
from edgecompress.errors import UserInputError


def test_recipe_and_profile_schemas_admit_exactly_the_table():
    # setup
    from edgecompress.profiles import parse_profile
    board = {"name": "b", "arch": "aarch64", "os": "linux", "cores": {"big": 4}, "memory_mb": 1024}
    # execute
    recipe = parse_recipe({"export": {"formats": list(FORMAT_NAMES)}})
    profile = parse_profile({**board, "runtimes": {f: {} for f in FORMAT_NAMES}}, "p")
    # assert: every row is admitted, with the runtime the row names; anything else is refused
    assert recipe.export.formats == list(FORMAT_NAMES) and set(profile.runtimes) == set(FORMAT_NAMES)
    with pytest.raises(UserInputError, match="export.formats.*unknown format 'mlmodel'"):
        parse_recipe({"export": {"formats": ["mlmodel"]}})
    with pytest.raises(UserInputError, match="unknown format 'mlmodel'"):
        parse_profile({**board, "runtimes": {"mlmodel": {}}}, "p")


def test_registry_and_agent_cover_every_row():
    # setup
    from edgecompress.device.protocol import agent_path
    from edgecompress.registry import EXPORTERS
    spec = importlib.util.spec_from_file_location("agent_runtimes_under_test", agent_path("agent_runtimes.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # assert: a new row without its exporter module or its on-device loader fails here
    assert set(EXPORTERS.names()) == set(FORMAT_NAMES)
    runtimes = {f.runtime for f in FORMATS.values()}
    assert set(mod.LOADERS) == runtimes and set(mod.IMPORTS) == runtimes
    for f in FORMATS.values():
        assert importlib.util.find_spec(f.module) is not None, f.module


def test_profile_naming_the_wrong_runtime_for_a_format_is_refused():
    # setup
    from edgecompress.profiles import parse_profile
    data = {"name": "b", "arch": "aarch64", "os": "linux", "cores": {"big": 4}, "memory_mb": 1024,
            "runtimes": {"tflite": {"runtime": "onnxruntime"}}}
    # execute / assert
    with pytest.raises(UserInputError, match="runtimes.tflite: onnxruntime cannot run .tflite; use tflite"):
        parse_profile(data, "profile b")


def test_refusal_text_names_the_field_and_the_fix():
    # setup
    from edgecompress.recipe import QuantSpec
    # execute
    why = FORMATS["tflite"].refusal(QuantSpec(activations="static"))
    # assert
    assert why.startswith("tflite cannot realize quantize.activations: static") and "use activations: dynamic" in why
    assert FORMATS["onnx"].refusal(QuantSpec(activations="static")) is None
    assert FORMATS["tflite"].refusal(None) is None
