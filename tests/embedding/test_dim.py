"""embedding.dim: the student projects its pooled vector to fewer dimensions (a bias-free nn.Linear before the
normalisation, started from PCA of the teacher's train vectors) and is distilled toward the teacher's vectors through
the same fixed PCA map; the projection saves, reloads, loads in sentence-transformers and exports in the graph."""
import numpy as np
import pytest
import torch

from edgecompress.compress.base import EmbeddingLoss, StageContext, Teacher
from edgecompress.embedding import load_embedder
from edgecompress.errors import UserInputError
from edgecompress.modeling import load_tokenizer
from edgecompress.pooling import resolve_pooling
from edgecompress.recipe import DistillCfg, parse_recipe
from edgecompress.registry import STAGES
from edgecompress.zoo import corpus_texts, save_tiny_embedder, small_vader

DIM = 8
TEXTS = ["a happy day at the beach", "the worst film of the year", "ok", "I would buy it again, great value"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_embedder(tmp_path_factory.mktemp("emb") / "t", "bert", texts=corpus_texts(400))


def _teacher_and_ctx(folder):
    teacher = Teacher(load_embedder(folder, resolve_pooling(folder)), load_tokenizer(folder))
    return teacher, StageContext(small_vader(96, 32), 32, embedding=EmbeddingLoss("both"), embedding_dim=DIM)


def _vectors(model, tok, texts):
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.numpy()


def test_the_projection_starts_as_the_pca_of_the_teachers_train_vectors(folder):
    # setup: a student that keeps every teacher layer, so before training it is the teacher plus the projection
    from edgecompress.compress.distill import _init_projection, build_student
    from edgecompress.compress.train import predict_logits
    teacher, ctx = _teacher_and_ctx(folder)
    student = build_student(teacher.model, DistillCfg(student={"from_teacher_layers": [0, 1]}))
    # execute
    info = _init_projection(student, teacher, ctx, None)
    # assert: the weight spans the top-DIM right singular subspace of the teacher's (uncentred) train vectors ...
    w = student.embedding_projection.weight.detach().numpy()
    t = ctx.teacher_outputs(teacher, "train")
    _, _, vt = np.linalg.svd(t.astype(np.float64), full_matrices=False)
    assert w.shape == (DIM, 32) and info == {"dim": DIM, "width": 32, "init": "pca", "fit_rows": 96}
    np.testing.assert_allclose(w @ w.T, np.eye(DIM), atol=1e-5)
    np.testing.assert_allclose(w.T @ w, vt[:DIM].T @ vt[:DIM], atol=1e-5)
    # ... and the untrained student's vectors are the targets: the teacher's through the map, re-normalised
    targets = ctx.teacher_targets(teacher, "test")
    ours = predict_logits(student.eval(), ctx.eval_batches(teacher.tokenizer, "test"))  # the same rows and truncation
    np.testing.assert_allclose(ours, targets, atol=1e-4)
    np.testing.assert_allclose(targets, (lambda v: v / np.linalg.norm(v, axis=1, keepdims=True))(
        ctx.teacher_outputs(teacher, "test") @ w.T), atol=1e-5)


def test_a_student_with_dim_distils_saves_reloads_and_loads_in_sentence_transformers(folder, tmp_path):
    # setup
    from sentence_transformers import SentenceTransformer
    teacher, ctx = _teacher_and_ctx(folder)
    cfg = DistillCfg(student={"from_teacher_layers": [1]}, train={"epochs": 1, "learning_rate": 1e-3,
                                                                   "batch_size": 16})
    # execute
    res = STAGES.get("distill")(teacher.model, teacher.tokenizer, cfg, ctx, teacher)
    res.model.save_pretrained(str(tmp_path / "s"))
    res.tokenizer.save_pretrained(str(tmp_path / "s"))
    again = load_embedder(tmp_path / "s")
    peer = SentenceTransformer(str(tmp_path / "s"), device="cpu").encode(TEXTS)
    # assert: DIM-wide unit vectors, judged against the mapped teacher; the same after reload and in s-t
    ours = _vectors(res.model, res.tokenizer, TEXTS)
    assert ours.shape == (len(TEXTS), DIM) and np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    assert res.metrics["embedding_projection"]["dim"] == DIM and 0 < res.metrics["test_cosine_to_teacher"] <= 1
    assert again.config.embedding_dim == DIM
    np.testing.assert_allclose(_vectors(again, res.tokenizer, TEXTS), ours, atol=1e-6)
    np.testing.assert_allclose(peer, ours, atol=1e-5)
    assert [m["path"] for m in __import__("json").loads((tmp_path / "s" / "modules.json").read_text())] == \
        ["", "1_Pooling", "2_Dense", "3_Normalize"]
    assert resolve_pooling(tmp_path / "s") == resolve_pooling(folder)  # the saved student reads back as a teacher


def test_a_teacher_folder_with_a_foreign_dense_module_is_refused(folder, tmp_path):
    # setup: a sentence-transformers folder whose Dense module the encoder's config.json knows nothing of
    import json
    import shutil
    from edgecompress.pooling import _write_dense
    other = tmp_path / "dense"
    shutil.copytree(folder, other)
    _write_dense(other / "2_Dense", np.eye(4, 32, dtype=np.float32))
    modules = json.loads((other / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (other / "modules.json").write_text(json.dumps(modules))
    # execute / assert
    with pytest.raises(UserInputError, match="a Dense module after pooling is supported only"):
        resolve_pooling(other)


@pytest.mark.parametrize("fmt", ["onnx", "ptl"])
def test_the_projection_is_in_the_exported_graph_and_verify_reports_the_pca_cosine(folder, tmp_path, fmt):
    # setup: a student with a random projection (export must not depend on training)
    from edgecompress.export.base import IOSpec
    from edgecompress.modeling import set_embedding_projection
    from edgecompress.registry import EXPORTERS
    from edgecompress.verification import verify_embedding_file
    teacher, ctx = _teacher_and_ctx(folder)
    student = load_embedder(folder, resolve_pooling(folder))
    torch.manual_seed(0)
    set_embedding_projection(student, torch.randn(DIM, 32))
    io = IOSpec(vocab_size=student.config.vocab_size, num_labels=DIM, max_seq_len=32, output_name="embedding")
    # execute
    exp = EXPORTERS.get(fmt)()
    infer = exp.load(exp.export(student, io, None, None, tmp_path).file)
    test = ctx.splits["test"]
    metrics = verify_embedding_file(infer, io, student, teacher.tokenizer, test, shapes=[(3, 19)], seed=0,
                                    reference=lambda: ctx.teacher_outputs(teacher, "test"),
                                    target=lambda: ctx.teacher_targets(teacher, "test"))
    # assert: [batch, DIM] as torch at a shape other than the export's; the cosine to the teacher only at equal width
    enc = teacher.tokenizer(TEXTS[:3], padding="max_length", max_length=19, return_tensors="np")
    got = np.asarray(infer({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}))
    assert got.shape == (3, DIM)
    np.testing.assert_allclose(got, _vectors(student, teacher.tokenizer, TEXTS[:3]), atol=1e-4)
    assert metrics["dim"] == DIM and metrics["cosine_to_torch_min"] > 0.9999
    assert "cosine_to_teacher_mean" not in metrics and -1 <= metrics["cosine_to_pca_teacher_mean"] <= 1
    assert 0 <= metrics["recall_at_10"] <= 1 and "knn_label_accuracy" in metrics


def _embed(**over):
    return {"task": "embedding", "teacher": {"finetune": None},
            "stages": [{"kind": "distill", "student": {"from_teacher_layers": [0, 2, 4]}}], **over}


@pytest.mark.parametrize("recipe, message", [
    ({"embedding": {"dim": 64}}, "embedding.dim applies to task: embedding only"),
    (_embed(embedding={"dim": 0}), "embedding.dim"),
    (_embed(embedding={"dim": 64}, stages=[{"kind": "trim_vocab"}]), "embedding.dim: the projection"),
])
def test_dim_is_refused_where_it_cannot_apply(recipe, message):
    # execute
    with pytest.raises(UserInputError) as e:
        parse_recipe(recipe)
    # assert
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("stage, dim, width", [
    ({"kind": "distill", "student": {"from_teacher_layers": [0, 2, 4]}}, 385, 384),
    ({"kind": "distill", "student": {"config": {"num_hidden_layers": 2, "hidden_size": 256}}}, 257, 256),
])
def test_plan_refuses_a_dim_wider_than_the_student(stage, dim, width):
    # setup
    from edgecompress.plan import make_plan
    # execute / assert
    with pytest.raises(UserInputError, match=f"embedding.dim {dim} exceeds the student's width {width}; set "
                                             f"embedding.dim to at most {width}"):
        make_plan(parse_recipe(_embed(embedding={"dim": dim}, stages=[stage])))


def test_plan_refuses_a_narrower_student_without_dim_and_takes_it_with_dim():
    # setup
    from edgecompress.plan import make_plan
    narrow = [{"kind": "distill", "student": {"config": {"num_hidden_layers": 2, "hidden_size": 256}}}]
    # execute / assert: without a dim the 256-wide vector has nothing to be compared with
    with pytest.raises(UserInputError, match="width 256 differs from the teacher's 384.*set embedding.dim: 256"):
        make_plan(parse_recipe(_embed(stages=narrow)))
    assert make_plan(parse_recipe(_embed(stages=narrow, embedding={"dim": 256}))) is not None


def test_dim_changes_the_students_id_and_not_the_teachers():
    # setup
    from edgecompress.plan import make_plan
    ids = lambda r: {n.label: n.id for n in make_plan(parse_recipe(r)).graph}  # noqa: E731
    # execute
    base, small = ids(_embed()), ids(_embed(embedding={"dim": 128}))
    # assert
    assert small["teacher"] == base["teacher"] and small["1-distill"] != base["1-distill"]


def test_a_run_with_dim_verifies_its_files_against_the_teachers_neighbours(tmp_path):
    # setup: distill to DIM dims, then trim the vocabulary (its recovery trains toward the same mapped targets)
    import json
    from edgecompress.zoo import write_small_vader
    from tests._cli import run_recipe
    recipe = {"name": "dim", "task": "embedding", "embedding": {"dim": DIM},
              "teacher": {"source": str(save_tiny_embedder(tmp_path / "t", "bert", texts=corpus_texts(400))),
                          "finetune": None},
              "data": {"source": str(write_small_vader(tmp_path / "data", 96, 48)), "max_seq_len": 32},
              "stages": [{"kind": "distill", "student": {"from_teacher_layers": [0]}, "train": {"epochs": 1}},
                         {"kind": "trim_vocab", "recovery": {"epochs": 1, "batch_size": 16}}],
              "export": {"formats": ["onnx"], "precisions": ["fp32"], "max_seq_len": 32,
                         "parity_shapes": [[1, 17], [3, 29]]},
              "bench": {"threads": 1, "seq_len": 16, "warmup_runs": 1, "runs": 3}}
    # execute
    proc = run_recipe(tmp_path, recipe, "--quiet", timeout=600)
    # assert: the teacher's file keeps its width and its cosine; the student's is DIM wide, judged by the PCA cosine
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = tmp_path / "runs" / "dim"
    rows = {r["label"]: r for r in json.loads((runs / "report.json").read_text())["rows"]}
    assert rows["teacher-onnx-fp32"]["dim"] == 32 and rows["teacher-onnx-fp32"]["cosine_to_teacher_mean"] > 0.999
    student = rows["onnx-fp32"]
    assert student["dim"] == DIM and student.get("cosine_to_teacher_mean") is None
    assert 0 < student["cosine_to_pca_teacher_mean"] <= 1 and 0 <= student["recall_at_10"] <= 1
    assert json.loads((runs / "artifacts" / "onnx-fp32" / "io.json").read_text())["num_labels"] == DIM
    assert f"{student['cosine_to_pca_teacher_mean']:.3f} (PCA)" in (runs / "report.md").read_text()
