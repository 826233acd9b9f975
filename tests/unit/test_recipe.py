import subprocess
import sys
import time

import pytest

from edgecompress.errors import UserInputError
from edgecompress.recipe import DEFAULT_RECIPE_PATH, Recipe, load_recipe, parse_recipe


def test_default_yaml_equals_schema_defaults():
    # setup / execute
    r = load_recipe(DEFAULT_RECIPE_PATH)
    # assert: the file users copy is exactly what `run` with no argument does
    assert r == Recipe()
    assert [s.kind for s in r.stages] == ["distill"]


@pytest.mark.parametrize("data, needle", [
    ({"bench": {"thread": 1}}, "unknown key 'bench.thread'"),
    ({"stages": [{"kind": "distill", "alpah": 0.3}]}, "unknown key 'stages[0].alpah'"),
    ({"bench": {"threads": "two"}}, "field 'bench.threads'"),
    ({"stages": [{"kind": "prune", "sparsity": 1.0}]}, "field 'stages[0].sparsity'"),
    ({"stages": [{"kind": "quantise"}]}, "stages[0]"),
    ({"export": {"formats": ["tfjs"]}}, "export.formats[0]"),
    ({"data": {"max_seq_len": 48}, "export": {"max_seq_len": 48}, "bench": {"seq_len": 64}},
     "bench.seq_len 64 exceeds export.max_seq_len 48"),
    ({"data": {"max_seq_len": 256}, "export": {"max_seq_len": 128}},
     "data.max_seq_len 256 exceeds export.max_seq_len 128"),
    ({"stages": [{"kind": "prune"}, {"kind": "distill"}]}, "distill must be the first stage"),
    (["not", "a", "mapping"], "must be a YAML mapping"),
])
def test_bad_recipe_fails_with_one_line_naming_the_field(data, needle):
    # execute
    with pytest.raises(UserInputError) as e:
        parse_recipe(data, "r.yaml")
    # assert
    msg = str(e.value)
    assert needle in msg
    assert "\n" not in msg


def test_malformed_yaml_names_the_line(tmp_path):
    # setup
    p = tmp_path / "r.yaml"
    p.write_text("name: x\nbench:\n  threads: [1\n")
    # execute / assert
    with pytest.raises(UserInputError, match=r"malformed YAML at line \d+"):
        load_recipe(p)


def test_cli_bad_recipe_exits_2_in_under_a_second(tmp_path):
    # setup
    p = tmp_path / "r.yaml"
    p.write_text("name: x\nbench:\n  warmup: 3\n")
    # execute
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgecompress", "plan", str(p)], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    # assert: one line on stderr naming the field, exit 2, no traceback
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "unknown key 'bench.warmup'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert elapsed < 5  # process start included; the validation itself is milliseconds


@pytest.mark.parametrize("path", sorted(DEFAULT_RECIPE_PATH.parent.glob("*.yaml")), ids=lambda p: p.name)
def test_every_packaged_recipe_plans(path):
    # setup / execute: the whole plan (teacher folder, data, stages vs teacher, exporters, profile), no work
    from edgecompress.plan import make_plan
    plan = make_plan(load_recipe(path))
    # assert
    assert plan.steps[0].startswith("teacher") and plan.num_labels == 2


def test_a_huge_bad_value_is_echoed_bounded(tmp_path):
    # setup
    from edgecompress.recipe import load_recipe
    path = tmp_path / "r.yaml"
    path.write_text("name: '" + "x/" * 500_000 + "'\n")
    # execute / assert
    with pytest.raises(UserInputError) as e:
        load_recipe(path)
    assert "field 'name'" in str(e.value) and len(str(e.value)) < 500


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path):
    # setup: nine levels of nine aliases each (a billion strings once expanded)
    import time
    from edgecompress.recipe import load_recipe
    lines = ['a0: &a0 "lol"'] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    path = tmp_path / "r.yaml"
    path.write_text("\n".join(lines) + "\nname: *a9\n")
    # execute / assert
    t0 = time.perf_counter()
    with pytest.raises(UserInputError, match="YAML aliases"):
        load_recipe(path)
    assert time.perf_counter() - t0 < 2


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: None])
def test_a_directory_or_device_as_the_recipe_is_named_as_such(tmp_path, make):
    # setup
    from pathlib import Path
    from edgecompress.recipe import load_recipe
    target = tmp_path / "dir.yaml"
    make(target)
    path = target if target.exists() else Path("/dev/null")
    # execute / assert
    with pytest.raises(UserInputError, match="is a directory|is not a regular file"):
        load_recipe(path)


def test_relative_sources_resolve_against_the_recipe_folder(tmp_path, monkeypatch):
    # setup: the recipe names its data folder relative to itself; the command runs from elsewhere
    from edgecompress.recipe import load_recipe
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "r.yaml").write_text("data: {source: mydata}\nteacher: {source: ./model}\n")
    monkeypatch.chdir(tmp_path)
    # execute
    r = load_recipe(tmp_path / "proj" / "r.yaml")
    # assert
    assert r.data.source == str(tmp_path / "proj" / "mydata") and r.teacher.source == str(tmp_path / "proj" / "model")
