"""`run` refuses, before any work and without leaving a folder behind, inputs that would only fail later."""
from __future__ import annotations

import pytest

from edgecompress.cli import main


@pytest.mark.parametrize("data,needle", [
    ({"stages": [{"kind": "distill"}, {"kind": "distill"}]}, "distill appears twice"),
    ({"stages": [{"kind": "distill", "train": {"epochs": ".inf"}}]}, "finite number"),
    ({"seed": -1}, "field 'seed'"),
])
def test_recipes_that_would_fail_mid_run_are_refused_by_plan(tmp_path, data, needle, capsys):
    # setup
    import yaml
    path = tmp_path / "r.yaml"
    text = yaml.safe_dump(data).replace("'.inf'", ".inf")
    path.write_text(text)
    # execute
    code = main(["run", str(path), "--out", str(tmp_path / "runs")])
    # assert
    assert code == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_out_or_home_that_is_a_file_is_refused_before_work(tmp_path, monkeypatch, capsys):
    # setup
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    # execute
    out_code = main(["run", "--out", str(a_file / "runs")])
    monkeypatch.setenv("EDGECOMPRESS_HOME", str(a_file))
    home_code = main(["run", "--out", str(tmp_path / "runs")])
    # assert
    err = capsys.readouterr().err
    assert (out_code, home_code) == (2, 2)
    assert "--out" in err and "EDGECOMPRESS_HOME" in err and "is a file, not a folder" in err
    assert not (tmp_path / "runs").exists()
