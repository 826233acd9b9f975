"""The end-of-run summary: the best file is the fastest that verifies, and the screen says where things are."""
import io
from pathlib import Path

from edgecompress.report import best_row
from edgecompress.summary import print_summary


def _row(label, p50, verified, acc=0.9):
    return {"label": label, "runner": "python", "test_accuracy": acc, "accuracy_vs_teacher": acc / 0.92,
            "p50_ms": p50, "speedup_vs_teacher": 30 / p50, "file_mb": 10.0, "size_ratio_vs_teacher": 8.0,
            "peak_rss_mb": 100.0, "verified": verified}


def _report(rows, best):
    return {"recipe": {"name": "demo"}, "run_seconds": 12.3, "rows": rows, "failures": [], "best": best,
            "labels": ["negative", "positive"], "profile": "host"}


def test_best_is_the_fastest_file_that_verifies_not_the_fastest():
    # setup
    rows = [{"label": "teacher-onnx-fp32", "p50_ms": 30.0}, _row("onnx-int8", 5.0, True),
            _row("pte-int8", 3.0, False), _row("ptl-int8", 4.0, True)]
    # execute
    best = best_row(rows)
    # assert
    assert best["label"] == "ptl-int8"
    assert best_row([_row("pte-int8", 3.0, False)]) is None


def test_summary_marks_the_best_row_and_ends_on_the_next_commands():
    # setup
    rows = [_row("onnx-int8", 5.0, True), _row("pte-int8", 3.0, False)]
    out = io.StringIO()
    # execute
    print_summary(_report(rows, "onnx-int8"), Path("runs/demo"), file=out)
    # assert
    lines = out.getvalue().rstrip().splitlines()
    assert [ln.split()[:2] for ln in lines if " python " in ln] == [["★", "onnx-int8"], ["pte-int8", "python"]]
    assert "classes: negative, positive" in lines
    assert lines[-2] == "  edgecompress predict runs/demo/artifacts/onnx-int8 'what a wonderful, moving film'"


def test_quiet_summary_is_the_verdict_and_the_report_path():
    # setup
    out = io.StringIO()
    # execute
    print_summary(_report([_row("pte-int8", 3.0, False)], None), Path("runs/demo"), quiet=True, file=out)
    # assert: no file verified, so the verdict says so and where to look
    assert out.getvalue().splitlines() == [
        "No file verifies (within profile host's budgets, accuracy drop included, and agreeing with its torch model "
        "on >= 98% of test labels); see 'Budgets missed' in report.md", "report: runs/demo/report.html"]


def test_bench_suggestion_uses_the_runs_device_profile_and_a_board_for_host():
    # setup
    on_board, on_host = _report([_row("onnx-int8", 5.0, True)], "onnx-int8"), _report([_row("onnx-int8", 5.0, True)],
                                                                                     "onnx-int8")
    on_board["recipe"]["profile"], on_host["recipe"]["profile"] = "rpi5", "host"
    # execute
    board, host = io.StringIO(), io.StringIO()
    print_summary(on_board, Path("runs/demo"), file=board)
    print_summary(on_host, Path("runs/demo"), file=host)
    # assert
    assert board.getvalue().splitlines()[-1].endswith("--profile rpi5 --target ssh://user@host")
    assert host.getvalue().splitlines()[-1].endswith("--profile rpi4 --target ssh://user@host")


def test_an_embedding_summary_shows_what_the_file_keeps_of_the_teachers_neighbours():
    # setup: embedding rows carry no accuracy, their files verify by cosine to their torch model
    rows = [{"label": "teacher-onnx-fp32", "runner": "python", "p50_ms": 30.0, "file_mb": 86.0, "recall_at_10": 1.0,
             "cosine_to_teacher_mean": 1.0, "test_accuracy": None},
            {**_row("onnx-int8", 5.0, True), "test_accuracy": None, "accuracy_vs_teacher": None,
             "recall_at_10": 0.433, "cosine_to_teacher_mean": 0.83}]
    report = {**_report(rows, "onnx-int8"), "recipe": {"name": "embed", "task": "embedding"}, "labels": []}
    out = io.StringIO()
    # execute
    print_summary(report, Path("runs/embed"), file=out)
    # assert
    text = out.getvalue()
    assert "recall@10" in text and "0.433" in text and "test acc" not in text
    assert "at cosine >= 0.95" in text and "classes:" not in text
    assert text.rstrip().splitlines()[-2].endswith("--json")


def test_an_embedding_file_verifies_by_the_share_of_its_vectors_that_agree_with_torch():
    # setup
    from types import SimpleNamespace

    from edgecompress.profiles import load_profile
    from edgecompress.report import judge_rows
    rows = [{"label": "teacher-onnx-fp32", "format": "onnx", "precision": "fp32", "p50_ms": 30.0, "file_mb": 86.0,
             "test_accuracy": None},
            {"label": "onnx-int8", "format": "onnx", "precision": "int8", "p50_ms": 5.0, "file_mb": 10.0,
             "test_accuracy": None, "label_agreement_vs_torch": None, "cosine_to_torch_min": 0.954,
             "vector_agreement_vs_torch": 0.999},
            {"label": "ptl-int8", "format": "ptl", "precision": "int8", "p50_ms": 4.0, "file_mb": 10.0,
             "test_accuracy": None, "label_agreement_vs_torch": None, "cosine_to_torch_min": 0.5,
             "vector_agreement_vs_torch": 0.97}]
    runner = SimpleNamespace(plan=SimpleNamespace(profile=load_profile("host")), recipe=None, lineage=[])
    # execute
    judge_rows(runner, rows)
    # assert
    assert [r.get("verified") for r in rows] == [None, True, False]


def test_summary_says_where_the_best_files_bytes_go():
    # setup: a 4-bit word table of 8,854 x 256 with a scale per 32 values
    row = _row("pte-int8", 3.0, True)
    row["file_bytes"] = {"file": 4 * 2 ** 20, "embedding_table": 2 ** 20, "rest": 3 * 2 ** 20}
    row["embedding_table"] = {"rows": 8854, "dim": 256, "bits": 4, "group_size": 32}
    out = io.StringIO()
    # execute
    print_summary(_report([row], "pte-int8"), Path("runs/demo"), file=out)
    # assert
    assert ("bytes:   4.00 MiB = word embeddings 1.00 MiB (8,854 x 256, 4-bit, a scale per 32 values) + the rest "
            "3.00 MiB") in out.getvalue().splitlines()


def test_vector_agreement_counts_rows_at_the_agreeing_cosine():
    # setup: four rows; one turned 90 degrees away from its reference, one slightly off
    import numpy as np

    from edgecompress.retrieval import AGREEING_COSINE, vector_agreement
    ref = np.eye(4)
    off = ref.copy()
    off[1] = [0, 0, 1, 0]
    off[2] = [0.3, 0, 1, 0]
    # execute / assert: a worst row does not decide alone, the share does
    assert vector_agreement(off, ref) == 0.75  # row 2 is at cosine 0.958: it agrees
    assert vector_agreement(ref, ref) == 1.0 and AGREEING_COSINE < 1
