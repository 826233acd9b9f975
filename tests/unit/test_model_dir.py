"""A teacher folder that cannot load is refused by `plan`'s cheap checks, before any data is read or model built."""
from __future__ import annotations

import json

import pytest

from edgecompress.errors import UserInputError
from edgecompress.model_dir import check_model_dir
from edgecompress.zoo import save_tiny_teacher


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher"))


def _with_config(tmp_path, teacher_dir, edit) -> object:
    import shutil
    d = tmp_path / "t"
    shutil.copytree(teacher_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(edit(cfg)))
    return d


@pytest.mark.parametrize("edit,needle", [
    (lambda c: [c], "a JSON list, not an object"),
    (lambda c: {k: v for k, v in c.items() if k != "hidden_size"}, "field hidden_size is missing"),
    (lambda c: {**c, "num_hidden_layers": "2"}, "field num_hidden_layers is missing or not a positive integer"),
    (lambda c: {**c, "hidden_size": c["hidden_size"] * 2}, "has shape .* but config.json says"),
    (lambda c: {**c, "num_hidden_layers": c["num_hidden_layers"] + 1}, "encoder layers but config.json says"),
])
def test_config_that_contradicts_the_weights_is_refused(tmp_path, teacher_dir, edit, needle):
    # setup
    d = _with_config(tmp_path, teacher_dir, edit)
    # execute / assert
    with pytest.raises(UserInputError, match=needle):
        check_model_dir(d)


def test_a_consistent_folder_passes(teacher_dir):
    # execute
    cfg = check_model_dir(teacher_dir)
    # assert
    assert cfg["_head_labels"] == 2
