"""The embedding task's foundation: pooling read from a sentence-transformers folder (and refused where the folder
says otherwise), the embedder matches sentence-transformers itself, the retrieval metrics, and the recipe's refusals of
one task's settings on the other's recipe."""
import json

import numpy as np
import pytest

from edgecompress.errors import UserInputError
from edgecompress.pooling import Pooling, declared_pooling, resolve_pooling
from edgecompress.recipe import parse_recipe
from edgecompress import retrieval
from edgecompress.retrieval import binary_corpus, index_recall, int8_corpus, knn_accuracy, recall_at_k, rank
from edgecompress.zoo import corpus_texts, minilm_dir, save_family_model, save_tiny_embedder

TEXTS = ["a happy day at the beach", "the worst film of the year", "ok", "I would buy it again, great value"]


@pytest.fixture(scope="module")
def texts():
    return corpus_texts(400)


def test_the_packaged_teacher_declares_mean_pooling_and_normalize():
    # execute
    got = declared_pooling(minilm_dir())
    # assert
    assert got == Pooling("mean", True)


def test_a_pooling_the_folder_does_not_declare_is_refused_and_a_plain_folder_must_name_one(tmp_path, texts):
    # setup
    plain = save_family_model("bert", tmp_path / "plain", texts)
    # execute / assert
    with pytest.raises(UserInputError, match="declares mean pooling"):
        resolve_pooling(minilm_dir(), "cls")
    with pytest.raises(UserInputError, match="set embedding.pooling"):
        resolve_pooling(plain, "auto")
    assert resolve_pooling(plain, "max") == Pooling("max", True)
    assert resolve_pooling(minilm_dir(), "auto") == resolve_pooling(minilm_dir(), "mean")


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_a_tiny_st_folder_loads_and_embeds_as_sentence_transformers_does(tmp_path, texts, pooling):
    # setup
    import torch
    from sentence_transformers import SentenceTransformer
    from edgecompress.embedding import load_embedder
    from edgecompress.modeling import load_tokenizer
    folder = save_tiny_embedder(tmp_path / pooling, "roberta", pooling=pooling, texts=texts)
    tok = load_tokenizer(folder)
    # execute
    model = load_embedder(folder, resolve_pooling(folder))
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.numpy()
    peer = SentenceTransformer(str(folder), device="cpu").encode(TEXTS)
    # assert: the same vectors, at different lengths in one padded batch
    assert ours.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(ours, peer, atol=1e-5)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_a_saved_embedder_keeps_its_pooling_and_is_a_sentence_transformers_folder(tmp_path, texts):
    # setup
    from edgecompress.embedding import load_embedder
    src = save_tiny_embedder(tmp_path / "src", "bert", pooling="cls", normalize=False, texts=texts)
    model = load_embedder(src, resolve_pooling(src))
    # execute
    model.save_pretrained(str(tmp_path / "saved"))
    again = load_embedder(tmp_path / "saved")
    # assert
    assert declared_pooling(tmp_path / "saved") == Pooling("cls", False)
    assert (again.config.embedding_pooling, again.config.embedding_normalize) == ("cls", False)
    assert type(again) is type(model)


def test_recall_at_k_and_knn_accuracy():
    # setup
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(2, 16)) * 10
    labels = np.repeat([0, 1], 30)
    vecs = centers[labels] + rng.normal(size=(60, 16))
    # execute / assert
    assert recall_at_k(vecs, vecs, 10) == 1.0
    assert recall_at_k(rng.normal(size=(60, 16)), vecs, 10) < 0.5
    assert knn_accuracy(vecs, labels) == 1.0
    assert knn_accuracy(rng.normal(size=(60, 16)), labels) < 0.8
    order, sims = rank(vecs[0], vecs)
    assert order[0] == 0 and sims[0] == pytest.approx(1.0) and np.all(np.diff(sims) <= 1e-12)


@pytest.mark.parametrize("dim", [16, 36])
def test_an_int8_index_keeps_the_neighbours_and_bits_rescored_from_every_row_rank_as_int8(monkeypatch, dim):
    # setup: 6 clusters of 20; 36 dims do not fill whole bytes of bits
    rng = np.random.default_rng(1)
    vecs = (rng.normal(size=(6, dim)) * 3)[np.repeat(np.arange(6), 20)] + rng.normal(size=(120, dim))
    # execute
    q, scale = int8_corpus(vecs)
    got = index_recall(vecs, vecs, 10)
    monkeypatch.setattr(retrieval, "RESCORE", 12)  # 12 x 10 candidates: every other row is rescored
    every = index_recall(vecs, vecs, 10)
    # assert: the int8 values round to within half a step; the byte counts; the binary search rescored over every row
    # is the int8 index's ranking
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    assert q.dtype == np.int8 and np.abs(q * scale - unit).max() <= scale.max() / 2 + 1e-7
    assert got["index_bytes_per_vector"] == {"float32": 4 * dim, "int8": dim, "binary": -(-dim // 8)}
    assert binary_corpus(vecs).shape == (120, -(-dim // 8))
    assert got["index_int8_recall_at_10"] > 0.9
    assert every["index_binary_rescored_recall_at_10"] == pytest.approx(every["index_int8_recall_at_10"])


def _embed_recipe(**over):
    # A full-width student: the default one is narrower, which an embedding needs embedding.dim for.
    base = {"task": "embedding", "teacher": {"finetune": None},
            "stages": [{"kind": "distill", "student": {"from_teacher_layers": [0, 2, 4]}}]}
    return {**base, **over}


@pytest.mark.parametrize("recipe, message", [
    (_embed_recipe(teacher={}), "teacher.finetune trains a classification head"),
    (_embed_recipe(stages=[{"kind": "distill", "alpha": 0.3}]), "alpha and temperature"),
    (_embed_recipe(stages=[{"kind": "distill"}, {"kind": "prune", "method": "taylor"}]), "taylor importance"),
    (_embed_recipe(stages=[{"kind": "prune_structured", "heads_fraction": 0.2}]), "taylor importance"),
    (_embed_recipe(quantize={"qat": {"epochs": 1}}), "quantize.qat"),
    ({"embedding": {"pooling": "mean"}}, "embedding: applies to task: embedding only"),
])
def test_one_tasks_settings_on_the_others_recipe_are_refused_in_one_line(recipe, message):
    # execute
    with pytest.raises(UserInputError) as e:
        parse_recipe(recipe)
    # assert
    assert message in str(e.value) and "\n" not in str(e.value)


def test_plan_refuses_a_pooling_the_teacher_does_not_declare(tmp_path):
    # setup
    from edgecompress.plan import make_plan
    recipe = parse_recipe(_embed_recipe(embedding={"pooling": "cls"}))
    # execute / assert
    with pytest.raises(UserInputError, match="embedding.pooling cls but .* declares mean pooling"):
        make_plan(recipe)


def test_embedding_ids_cover_pooling_and_loss_and_not_the_labels():
    # setup
    from edgecompress.plan import make_plan
    ids = lambda r: {n.label: n.id for n in make_plan(parse_recipe(r)).graph}  # noqa: E731
    base = ids(_embed_recipe())
    # execute
    other_loss = ids(_embed_recipe(embedding={"loss": "mse"}))
    plan = make_plan(parse_recipe(_embed_recipe()))
    # assert: the loss changes the distilled student and what follows, never the teacher
    assert other_loss["teacher"] == base["teacher"] and other_loss["1-distill"] != base["1-distill"]
    assert plan.graph["onnx-int8"].config["labels"] == []
    assert plan.graph["teacher"].config["pooling"] == "mean" and plan.teacher_head == Pooling("mean", True)
    assert json.dumps(plan.graph["teacher"].config, default=str)  # the id's config stays JSON


def _txt_data(folder, texts):
    folder.mkdir(parents=True, exist_ok=True)
    for i, split in enumerate(("train", "validation", "test")):
        (folder / f"{split}.txt").write_text("\n".join(texts[i::3]) + "\n", encoding="utf-8")
    return folder


def test_unlabelled_text_files_plan_for_embedding_and_are_refused_for_classification(tmp_path, texts):
    # setup
    from edgecompress.plan import make_plan
    data = _txt_data(tmp_path / "txt", texts[:90])
    teacher = save_tiny_embedder(tmp_path / "t", "bert", texts=texts)
    # execute
    plan = make_plan(parse_recipe(_embed_recipe(teacher={"source": str(teacher), "finetune": None},
                                                data={"source": str(data)},
                                                stages=[{"kind": "distill", "student": {"from_teacher_layers": [0]}}])))
    # assert: the text alone, no labels; a classifier on the same folder needs its label column
    assert plan.split_sizes == {"train": 30, "validation": 30, "test": 30}
    assert plan.splits["train"].label_names == [] and plan.num_labels == 0
    named = _embed_recipe(teacher={"source": str(teacher), "finetune": None},
                          data={"source": str(data), "label_column": "stars"})
    with pytest.raises(UserInputError, match="no column 'stars'"):
        make_plan(parse_recipe(named))
    with pytest.raises(UserInputError, match="no column 'label'"):
        make_plan(parse_recipe({"teacher": {"source": str(teacher)}, "data": {"source": str(data)},
                                "stages": [{"kind": "distill", "student": {"from_teacher_layers": [0]}}]}))
