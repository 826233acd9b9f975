"""Each exporter class is its format row: identity (suffix, runtime, extra, revision) read from formats.FORMATS, the
row's refused intents raised before any work."""
from __future__ import annotations

import pytest

from edgecompress.errors import UserInputError
from edgecompress.export.base import Exporter, IOSpec
from edgecompress.formats import FORMAT_NAMES, FORMATS
from edgecompress.recipe import QuantSpec
from edgecompress.registry import EXPORTERS

IO = IOSpec(vocab_size=1100, num_labels=2, max_seq_len=64, example_batch=2, example_seq_len=32)


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_registered_exporter_is_a_class_with_its_toolchain_present(name):
    # setup
    cls = EXPORTERS.get(name)

    # execute
    exporter = cls()

    # assert
    assert isinstance(cls, type) and issubclass(cls, Exporter)
    assert exporter.name == name and exporter.suffix == f".{name}"
    assert FORMATS[name].missing_modules() == []  # the default install has every extra


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_exporter_identity_is_the_format_tables(name):
    # setup
    spec = FORMATS[name]

    # execute
    exporter = EXPORTERS.get(name)(batch=3)

    # assert
    assert (exporter.suffix, exporter.runtime, exporter.extra) == (spec.suffix, spec.runtime, spec.extra)
    assert exporter.spec is spec and exporter.batch == 3
    assert exporter.revision == spec.revision
    # read from the table, not re-declared
    assert not {"suffix", "runtime", "extra", "revision"} & set(vars(type(exporter)))


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_batch_below_one_is_a_user_error(name):
    # execute / assert
    with pytest.raises(UserInputError, match="batch must be >= 1"):
        EXPORTERS.get(name)(batch=0)


REFUSED = [pytest.param(name, {r.field: r.example()}, id=f"{name}-{r.field}-{r.value}")
           for name, spec in FORMATS.items() for r in spec.refuses]


@pytest.mark.parametrize("name, intent", REFUSED)
def test_refused_intent_raises_the_tables_text_before_any_work(name, intent, tiny_bert, tmp_path, monkeypatch):
    # setup: any torch-side step or lowering would fail the test
    import edgecompress.export.quant as quant_steps
    monkeypatch.setattr(quant_steps, "prepare_torch", lambda *a, **k: pytest.fail("prepared before refusing"))
    exporter = EXPORTERS.get(name)()
    monkeypatch.setattr(type(exporter), "lower", lambda *a: pytest.fail("lowered before refusing"))
    quant = QuantSpec(**intent)
    out_dir = tmp_path / "out"

    # execute
    with pytest.raises(UserInputError) as e:
        exporter.export(tiny_bert, IO, quant, None, out_dir)

    # assert
    assert str(e.value) == FORMATS[name].refusal(quant)
    assert not out_dir.exists()  # not even created
