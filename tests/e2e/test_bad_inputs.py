"""Bad input never shows a traceback: exit 2, one line naming the problem and the fix, nothing half-written."""
import errno
import json
import shutil

import pytest
import yaml

from edgecompress.cli import main
from edgecompress.zoo import save_tiny_teacher, write_small_vader


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    base = tmp_path_factory.mktemp("good")
    return {"teacher": save_tiny_teacher(base / "teacher"), "data": write_small_vader(base / "data", 40, 12)}


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _mutate_teacher(fn):
    def make(tmp_path, good):
        d = _copy(good["teacher"], tmp_path / "t")
        fn(d)
        return {"teacher": {"source": str(d)}}
    return make


def _mutate_data(files):
    def make(tmp_path, good):
        d = _copy(good["data"], tmp_path / "d")
        for name, content in files.items():
            if content is None:
                (d / name).unlink()
            elif isinstance(content, bytes):
                (d / name).write_bytes(content)
            else:
                (d / name).write_text(content, encoding="utf-8")
        return {"data": {"source": str(d)}}
    return make


def _set_config(**kv):
    def fn(d):
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(kv)
        (d / "config.json").write_text(json.dumps(cfg))
    return fn


def _truncate(d):
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[:5000])


def _pickle_only(d):
    (d / "model.safetensors").rename(d / "pytorch_model.bin")


def _no_tokenizer(d):
    for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (d / f).unlink(missing_ok=True)


CSV_OK = "text,label\ngood,1\nbad,0\n"
CASES = {
    "unknown key": ({"bench": {"warmup": 1}}, "unknown key 'bench.warmup'"),
    "wrong type": ({"bench": {"runs": "many"}}, "field 'bench.runs'"),
    "negative threads": ({"bench": {"threads": 0}}, "field 'bench.threads'"),
    "sparsity 1": ({"stages": [{"kind": "distill"}, {"kind": "prune", "sparsity": 1.0}]}, "field 'stages[1].sparsity'"),
    "unknown stage kind": ({"stages": [{"kind": "quantise"}]}, "stages[0]"),
    "unknown format": ({"export": {"formats": ["tfjs"]}}, "export.formats[0]"),
    "bad recipe name": ({"name": "../../etc"}, "field 'name'"),
    "teacher dir missing": (lambda t, g: {"teacher": {"source": str(t / "nope")}}, "is not a directory"),
    "unknown packaged teacher": ({"teacher": {"source": "packaged:bert-huge"}}, "is not packaged"),
    "no config.json": (_mutate_teacher(lambda d: (d / "config.json").unlink()), "no config.json"),
    "config not json": (_mutate_teacher(lambda d: (d / "config.json").write_text("{oops")), "not valid JSON"),
    "unknown architecture": (_mutate_teacher(_set_config(model_type="gpt2")), "model_type 'gpt2' is not supported"),
    "pickle weights refused": (_mutate_teacher(_pickle_only), "pickles are never loaded"),
    "missing weights": (_mutate_teacher(lambda d: (d / "model.safetensors").unlink()), "no model.safetensors"),
    "corrupt weights": (_mutate_teacher(_truncate), "corrupt safetensors"),
    "missing tokenizer": (_mutate_teacher(_no_tokenizer), "no tokenizer"),
    # config.json says 1000 tokens: the weights (30522 rows) and the tokenizer both disagree with it
    "tokenizer of another model": (_mutate_teacher(_set_config(vocab_size=1000)), "belong"),
    "layer map out of range": ({"stages": [{"kind": "distill", "student": {"from_teacher_layers": [0, 7]}}]}, "layer 7 does not exist"),
    "seq longer than positions": ({"export": {"max_seq_len": 512}, "data": {"max_seq_len": 64}}, "exceeds the model's max_position_embeddings"),
    "data dir missing": (lambda t, g: {"data": {"source": str(t / "nope")}}, "is not a directory"),
    "unknown packaged data": ({"data": {"source": "packaged:imdb"}}, "is not a packaged data set"),
    "missing validation file": (_mutate_data({"validation.csv": None}), "no validation.csv"),
    "empty dataset": (_mutate_data({"train.csv": "text,label\n"}), "no rows with text"),
    "one-class dataset": (_mutate_data({"train.csv": "text,label\na,1\nb,1\n"}), "single class"),
    "missing text column": (_mutate_data({"train.csv": "sentence,label\na,1\nb,0\n"}), "no column 'text'"),
    "missing label column": (_mutate_data({"train.csv": "text,stars\na,1\nb,0\n"}), "no column 'label'"),
    "non-utf8 text": (_mutate_data({"train.csv": b"text,label\ncaf\xe9,1\nb,0\n"}), "not UTF-8"),
    "label outside the train labels": (_mutate_data({"test.csv": "text,label\na,5\n"}), "outside the train split's labels"),
    "labels vs model head": (_mutate_data({"train.csv": "text,label\na,0\nb,1\nc,2\n", "validation.csv": CSV_OK,
                                           "test.csv": CSV_OK}), "the model head has 2 labels but the data has 3"),
    "unknown profile": ({"profile": "toaster"}, "unknown device profile 'toaster'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, good, tmp_path, monkeypatch, capsys):
    # setup
    patch, needle = CASES[case]
    recipe = {"name": "bad", "teacher": {"source": str(good["teacher"]), "finetune": None},
              "data": {"source": str(good["data"]), "max_seq_len": 64},
              "stages": [{"kind": "distill", "student": {"from_teacher_layers": [0]}}],
              "export": {"formats": ["onnx"], "max_seq_len": 64}, "bench": {"seq_len": 32}}
    over = patch(tmp_path, good) if callable(patch) else patch
    for k, v in over.items():
        recipe[k] = {**recipe[k], **v} if isinstance(v, dict) and isinstance(recipe.get(k), dict) else v
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    home = tmp_path / "home"
    monkeypatch.setenv("EDGECOMPRESS_HOME", str(home))
    # execute
    rc = main(["run", str(path), "--out", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err.strip()
    # assert
    assert rc == 2, err
    assert needle in err
    assert len(err.splitlines()) == 1 and err.startswith("edgecompress: error: ")
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()
    assert not home.exists() or not [p for p in (home / "store").iterdir()]


@pytest.mark.parametrize("text, needle", [
    ("name: x\nbench:\n  threads: [1\n", "malformed YAML at line"),
    ("- just\n- a list\n", "must be a YAML mapping"),
])
def test_bad_yaml_text(tmp_path, capsys, text, needle):
    # setup
    p = tmp_path / "r.yaml"
    p.write_text(text)
    # execute
    rc = main(["plan", str(p)])
    # assert
    assert rc == 2 and needle in capsys.readouterr().err


def test_missing_and_non_utf8_recipe_files(tmp_path, capsys):
    # setup
    p = tmp_path / "r.yaml"
    p.write_bytes(b"name: caf\xe9\n")
    # execute / assert
    assert main(["plan", str(tmp_path / "none.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["plan", str(p)]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_disk_full_while_writing_an_artifact_is_one_line_and_leaves_nothing(tmp_path):
    # setup
    from edgecompress.artifact import Store
    from edgecompress.errors import RuntimeFailure
    store = Store(tmp_path)
    # execute
    with pytest.raises(RuntimeFailure, match="disk full while writing the export artifact") as e:
        with store.create("export", "abc", {}, []) as tmp:
            (tmp / "part.onnx").write_bytes(b"x")
            raise OSError(errno.ENOSPC, "No space left on device")
    # assert
    assert e.value.exit_code == 3 and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []
