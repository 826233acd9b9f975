"""Class names from the data: string labels are their own names; integer classes take data.label_names or the data
folder's labels.json (the packaged VADER ships one), and only the export, verify and bench ids depend on them."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from edgecompress.data import load_splits
from edgecompress.errors import UserInputError
from edgecompress.plan import make_plan
from edgecompress.recipe import DataCfg, parse_recipe


def _splits(d, train="text,label\na,2\nb,0\nc,1\n", test="text,label\nd,1\ne,2\n"):
    d.mkdir(parents=True, exist_ok=True)
    for name, text in (("train.csv", train), ("validation.csv", "text,label\nf,0\n"), ("test.csv", test)):
        (d / name).write_text(text, encoding="utf-8")
    return d


def test_integer_labels_take_label_names_in_class_id_order(tmp_path):
    # setup
    d = _splits(tmp_path)
    # execute
    s = load_splits(DataCfg(source=str(d), label_names=["sad", "meh", "glad"]))
    # assert: ids stay the integers written in the file, names index them
    assert s["train"].labels.tolist() == [2, 0, 1] and s["test"].labels.tolist() == [1, 2]
    assert [s["test"].label_names[i] for i in s["test"].labels] == ["meh", "glad"]
    assert s["train"].label_names == s["test"].label_names == ["sad", "meh", "glad"]


def test_a_data_folders_labels_json_names_integer_classes_unless_the_recipe_does(tmp_path):
    # setup
    d = _splits(tmp_path)
    (d / "labels.json").write_text(json.dumps({"labels": ["x", "y", "z"]}))
    # execute
    from_file = load_splits(DataCfg(source=str(d)))["train"].label_names
    from_recipe = load_splits(DataCfg(source=str(d), label_names=["a", "b", "c"]))["train"].label_names
    # assert
    assert from_file == ["x", "y", "z"] and from_recipe == ["a", "b", "c"]


@pytest.mark.parametrize("train, names, labels_json, needle", [
    ("text,label\na,1\nb,0\n", ["only", "two", "three"], None, "data.label_names has 3 names but the data has 2 classes"),
    ("text,label\na,pos\nb,neg\n", ["neg", "pos"], None, "labels are already names .* remove data.label_names"),
    ("text,label\na,1\nb,0\n", None, '{"labels": ["same", "same"]}', "labels.json: not .* distinct names"),
    ("text,label\na,1\nb,0\n", None, '{"labels": ["one"]', "labels.json: not "),
])
def test_names_that_do_not_fit_the_data_are_one_line_errors(tmp_path, train, names, labels_json, needle):
    # setup
    d = _splits(tmp_path, train=train, test=train)
    if labels_json is not None:
        (d / "labels.json").write_text(labels_json)
    # execute / assert
    with pytest.raises(UserInputError, match=needle) as e:
        load_splits(DataCfg(source=str(d), label_names=names))
    assert "\n" not in str(e.value)


def test_packaged_vader_names_its_classes_and_only_export_ids_change():
    # setup
    named = make_plan(parse_recipe({}))
    renamed = make_plan(parse_recipe({"data": {"label_names": ["bad", "good"]}}))
    # execute
    ids = {n.label: n.id for n in named.graph}
    changed = {n.label for n in renamed.graph if n.id != ids[n.label]}
    # assert: the names are in every export's config; the teacher and the stages do not depend on them
    assert named.splits["train"].label_names == ["negative", "positive"]
    assert all(n.config["labels"] == ["negative", "positive"] for n in named.graph if n.step == "export")
    assert changed == {n.label for n in named.graph if n.job is not None}
    assert {"teacher", "1-distill"}.isdisjoint(changed)


def test_plan_refuses_label_names_of_the_wrong_length_in_one_line(tmp_path):
    # setup
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"label_names": ["negative", "neutral", "positive"]}}))
    # execute
    p = subprocess.run([sys.executable, "-m", "edgecompress", "plan", str(recipe)], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "EDGECOMPRESS_HOME": str(tmp_path / "home")})
    # assert
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [
        "edgecompress: error: data.label_names has 3 names but the data has 2 classes (labels 0..1); give one name "
        "per class, class 0 first"]


def test_plan_shows_the_class_names(tmp_path):
    # execute
    p = subprocess.run([sys.executable, "-m", "edgecompress", "plan"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "EDGECOMPRESS_HOME": str(tmp_path / "home")})
    # assert
    assert p.returncode == 0 and "  labels: ['negative', 'positive']" in p.stdout.splitlines()
