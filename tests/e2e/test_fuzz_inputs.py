"""Property-based fuzz of what a user writes (the recipe, the data files): `plan` answers 0 or 2 with one line, never
a traceback or a crash code, and writes nothing."""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecompress.cli import main

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
KEYS = ["name", "seed", "teacher", "data", "stages", "quantize", "export", "bench", "profile", "source", "kind",
        "formats", "precisions", "epochs", "learning_rate", "batch_size", "max_seq_len", "sparsity", "activations",
        "weights", "fallback", "calibration", "threads", "runs", "parity_shapes", "max_test_samples", "student",
        "config", "from_teacher_layers", "matches", "min_count", "recovery", "preset", "embeddings"]
leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                 st.text(max_size=30), st.sampled_from(["onnx", "pte", "distill", "prune", "static", "int8", "-x",
                                                        "packaged:vader", "../../etc", "host", "trim_vocab"]))
value = st.recursive(leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                  st.dictionaries(st.sampled_from(KEYS), kids, max_size=4)),
                     max_leaves=12)


def _plan(text: str) -> tuple[int, str, list[str]]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.yaml"
        path.write_text(text, encoding="utf-8")
        err = io.StringIO()
        cwd = os.getcwd()
        os.chdir(d)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(["plan", str(path)])
        finally:
            os.chdir(cwd)
        left = sorted(p.name for p in Path(d).iterdir() if p.name != "r.yaml")
    return code, err.getvalue(), left


def _check(code: int, err: str, left: list[str]) -> None:
    assert code in (0, 2), err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 1 and len(err) < 2000, err[:3000]
    assert left == []


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), value, max_size=5))
def test_any_recipe_mapping_plans_or_fails_in_one_line(data):
    # execute / assert
    _check(*_plan(yaml.safe_dump(data, allow_unicode=True)))


@SETTINGS
@given(st.text(max_size=300))
def test_any_recipe_text_plans_or_fails_in_one_line(text):
    # execute / assert
    _check(*_plan(text))


cell = st.one_of(st.text(max_size=40), st.sampled_from(["pos", "neg", "0", "1", "2", "", "\ufeff", '"', "a,b"]))


@SETTINGS
@given(st.lists(st.tuples(cell, cell), min_size=0, max_size=12), st.sampled_from(["csv", "jsonl"]),
       st.booleans())
def test_any_data_folder_plans_or_fails_in_one_line(rows, kind, bom):
    # setup: the same rows in all three splits, as CSV or JSON lines
    with tempfile.TemporaryDirectory() as d:
        for split in ("train", "validation", "test"):
            if kind == "csv":
                import csv
                buf = io.StringIO()
                w = csv.writer(buf)
                w.writerow(["text", "label"])
                w.writerows(rows)
                text = buf.getvalue()
            else:
                import json
                text = "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows)
            (Path(d) / f"{split}.{kind}").write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
        recipe = yaml.safe_dump({"data": {"source": d}})
        # execute / assert
        _check(*_plan(recipe))
