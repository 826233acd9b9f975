"""The support matrix (scripts/support_matrix.py -> docs/support-matrix.md): every family x stage x export x precision
cell is either accepted by plan or refused with a one-line reason, and the committed document says what the code says
(a change to families.py, formats.py or the stage configs that is not regenerated fails here). Torch-free, ~1 s."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from edgecompress.families import FAMILIES, FAMILY_NAMES
from edgecompress.formats import FORMAT_NAMES, FORMATS, PRECISIONS
from edgecompress.registry import STAGES as STAGE_ROWS
from edgecompress.zoo import FAMILIES as ZOO_FAMILIES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sm():
    spec = importlib.util.spec_from_file_location("support_matrix", ROOT / "scripts" / "support_matrix.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_every_cell_is_accepted_or_refused_with_a_one_line_reason(sm):
    # setup / execute
    cells = sm.plan_matrix()
    # assert: the whole cross product, once each
    keys = {(c.family, c.stage, c.fmt, c.precision) for c in cells}
    assert len(cells) == len(keys) == len(FAMILY_NAMES) * len(sm.STAGES) * len(FORMAT_NAMES) * len(PRECISIONS)
    for c in cells:
        for r in c.reasons:
            assert r.strip() and "\n" not in r, (c, r)


def test_the_matrix_covers_every_stage_kind_family_and_refusal(sm):
    # setup
    cells = sm.plan_matrix()
    reasons = {r for c in cells for r in c.reasons}
    # assert: a new stage kind, family or refusal row cannot be left out of the matrix
    assert {cfg.kind for _, cfg in sm.STAGES} == set(STAGE_ROWS.names())
    assert set(ZOO_FAMILIES) == set(FAMILY_NAMES), "--run needs a tiny zoo model of every family"
    for fam in FAMILIES.values():
        for r in fam.refuses:
            assert any(r.reason in reason for reason in reasons), f"{fam.model_type}: {r.what} is never exercised"
    intents = sm.intent_matrix()
    for spec in FORMATS.values():
        for r in spec.refuses:
            assert any(per[spec.name] and r.reason in per[spec.name] for _, per in intents), (spec.name, r.field)


def test_a_refusal_in_the_tables_shows_up_in_its_cells(sm, monkeypatch):
    # setup: a family refuses an export it did not refuse before
    import dataclasses
    from edgecompress import families
    bert = families.FAMILIES["bert"]
    refusal = families.FamilyRefusal("export:onnx-int8", "made up for the test; export onnx at fp32")
    monkeypatch.setitem(families.FAMILIES, "bert", dataclasses.replace(bert, refuses=bert.refuses + (refusal,)))
    # execute
    cells = [c for c in sm.plan_matrix() if c.family == "bert"]
    # assert: exactly bert's onnx int8 column, every stage, with the reason
    refused = {(c.stage, c.fmt, c.precision) for c in cells if not c.ok}
    assert refused == {(s, "onnx", "int8") for s in sm.STAGE_NAMES}
    assert all("made up for the test" in c.reasons[0] for c in cells if not c.ok)


def test_the_committed_document_matches_the_plan_the_code_generates(sm):
    # setup
    doc = (ROOT / "docs" / "support-matrix.md").read_text()
    # execute
    generated = sm.plan_section()
    # assert
    assert sm.between(doc, sm.PLAN_BEGIN, sm.PLAN_END) == generated, \
        "docs/support-matrix.md is stale: run python scripts/support_matrix.py (and --run for the measured section)"


def test_the_plan_section_is_deterministic(sm):
    assert sm.plan_section() == sm.plan_section()


def test_regenerating_the_plan_keeps_the_measured_section_and_marks_it_stale(sm):
    # setup: a measured section recorded against another plan
    run = (f"{sm.RUN_BEGIN}\n\n## What the code does (`--run`)\n\nMeasured 2026-01-01 against plan `000000000000`; "
           f"...\n\n{sm.RUN_END}\n")
    # execute
    doc = sm.render(sm.plan_section(), run)
    again = sm.render(sm.plan_section(), sm.between(doc, sm.RUN_BEGIN, sm.RUN_END))
    # assert: kept, flagged once, and not flagged when the hashes agree
    assert "**Stale:** measured against plan `000000000000`" in doc and doc == again
    fresh = run.replace("000000000000", sm.plan_hash(sm.plan_section()))
    assert "Stale" not in sm.render(sm.plan_section(), fresh)
