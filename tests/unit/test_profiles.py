"""Device profiles: every built-in loads; bad names, YAML and keys fail with one line naming the problem."""
from __future__ import annotations

import pytest

from edgecompress.errors import UserInputError
from edgecompress.profiles import list_profiles, load_profile


def test_all_builtin_profiles_load():
    # execute
    names = list_profiles()
    profiles = [load_profile(n) for n in names]

    # assert
    assert set(names) >= {"host", "rpi4", "rpi5", "android-arm64-midrange", "jetson-orin-nano"}
    for p in profiles:
        assert "onnx" in p.runtimes and p.runtimes["onnx"].runtime in (None, "onnxruntime")
        assert p.budget_for("onnx-int8").p90_ms is not None
    assert load_profile("rpi4").reach.kind == "ssh"
    assert load_profile("android-arm64-midrange").reach.kind == "adb"
    assert load_profile("host").reach.kind == "local"


def test_budget_layers_default_format_precision():
    # setup
    p = load_profile("rpi4")

    # execute
    b = p.budget_for("onnx-int8")
    fp32 = p.budget_for("onnx-fp32")

    # assert
    assert (b.p90_ms, b.load_ms) == (40, 3000)  # p90 from onnx-int8, load_ms from default
    assert fp32.p90_ms == 150


def _one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_unknown_profile_lists_known_names():
    # execute
    with pytest.raises(UserInputError) as e:
        load_profile("rpi3")

    # assert
    msg = _one_line(e)
    assert "unknown device profile 'rpi3'" in msg and "rpi4" in msg and "host" in msg


def test_unknown_key_is_named(tmp_path):
    # setup
    f = tmp_path / "board.yaml"
    f.write_text("name: board\narch: aarch64\nos: linux\ncores: {big: 4}\nmemory_mb: 2048\n"
                 "runtimes: {onnx: {runtime: onnxruntime, threads: 2}}\n"
                 "reach: {kind: ssh, host: b.local, hots: typo}\n")

    # execute
    with pytest.raises(UserInputError) as e:
        load_profile(f)

    # assert
    assert "unknown key 'reach.hots'" in _one_line(e)


@pytest.mark.parametrize("body, fragment", [
    ("name: b\narch: [unclosed\n", "malformed YAML at line"),
    ("name: b\narch: riscv64\nos: linux\ncores: {big: 1}\nmemory_mb: 512\nruntimes: {onnx: {runtime: onnxruntime}}\n",
     "field 'arch'"),
    ("name: b\narch: x86_64\nos: linux\ncores: {big: 1}\nmemory_mb: 512\nruntimes: {onnx: {runtime: executorch}}\n",
     "runtimes.onnx: executorch cannot run .onnx"),
    ("name: b\narch: x86_64\nos: linux\ncores: {big: 1}\nmemory_mb: 512\nruntimes: {onnx: {runtime: onnxruntime}}\n"
     "budgets: {onnx_int8: {p90_ms: 3}}\n", "budget key 'onnx_int8'"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_malformed_profiles_fail_in_one_line(tmp_path, body, fragment):
    # setup
    f = tmp_path / "b.yaml"
    f.write_text(body)

    # execute
    with pytest.raises(UserInputError) as e:
        load_profile(f)

    # assert
    assert fragment in _one_line(e)
