"""parity.compare / accuracy and the shared input checks, against hand-made infer functions (no exporting)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgecompress.errors import UserInputError
from edgecompress.export.base import IOSpec, check_inputs
from edgecompress.export.parity import accuracy, compare, sqnr_db

IO = IOSpec(vocab_size=1100, num_labels=2, max_seq_len=64)


def _torch_infer(model):
    def infer(inputs):
        with torch.no_grad():
            return model(input_ids=torch.from_numpy(inputs["input_ids"]),
                         attention_mask=torch.from_numpy(inputs["attention_mask"])).logits.numpy()
    return infer


def test_compare_of_the_model_with_itself_is_exact(tiny_bert):
    # setup
    infer = _torch_infer(tiny_bert)

    # execute
    r = compare(tiny_bert, infer, IO, shapes=[(1, 17), (3, 41)], seed=0)

    # assert
    assert r["max_abs_diff"] == 0.0 and r["mean_abs_diff"] == 0.0
    assert r["sqnr_db"] == float("inf")
    assert r["cosine_min"] == pytest.approx(1.0)
    assert r["label_agreement"] == 1.0
    assert r["n_rows"] == 4 and r["shapes"] == [[1, 17], [3, 41]]


def test_compare_flags_garbage_output(tiny_bert):
    # setup: all-zero logits, what a broken int8 runtime can silently return
    def zeros(inputs):
        return np.zeros((inputs["input_ids"].shape[0], IO.num_labels), dtype=np.float32)

    # execute
    r = compare(tiny_bert, zeros, IO)

    # assert: fails every int8 threshold used in test_exporters (SQNR > 20 dB, cosine > 0.95)
    assert r["sqnr_db"] == pytest.approx(0.0)
    assert r["cosine_min"] == 0.0


def test_compare_rejects_a_wrong_output_shape(tiny_bert):
    # setup
    def one_row(inputs):
        return np.zeros((1, IO.num_labels), dtype=np.float32)

    # execute / assert
    with pytest.raises(ValueError, match="shape"):
        compare(tiny_bert, one_row, IO, shapes=[(3, 9)])


def test_sqnr_db_of_a_known_noise_level():
    # setup
    ref = np.array([[3.0, 4.0]])  # |ref|^2 = 25
    test = ref + np.array([[0.5, 0.0]])  # |noise|^2 = 0.25

    # execute
    got = sqnr_db(ref, test)

    # assert
    assert got == pytest.approx(20.0)


def test_accuracy_counts_rows_across_batches():
    # setup
    logits = {0: np.array([[2.0, 1.0], [0.0, 1.0]]), 1: np.array([[0.0, 5.0]])}
    batches = [({"input_ids": np.zeros((2, 3), np.int64), "k": 0}, np.array([0, 0])),
               ({"input_ids": np.zeros((1, 3), np.int64), "k": 1}, np.array([1]))]

    # execute
    r = accuracy(lambda inputs: logits[inputs["k"]], batches)

    # assert
    assert r["accuracy"] == pytest.approx(2 / 3)
    assert r["n"] == 3
    assert r["predictions"].tolist() == [0, 1, 1]


@pytest.mark.parametrize("inputs, match", [
    ({"input_ids": np.ones((1, 65), np.int64), "attention_mask": np.ones((1, 65), np.int64)}, "max_seq_len 64"),
    ({"input_ids": np.ones((1, 8), np.int64)}, "missing model input"),
    ({"input_ids": np.ones((2, 8), np.int64), "attention_mask": np.ones((2, 7), np.int64)}, "share a"),
    ({"input_ids": np.ones((8,), np.int64), "attention_mask": np.ones((8,), np.int64)}, "share a"),
    ({"input_ids": np.full((1, 8), 1100), "attention_mask": np.ones((1, 8), np.int64)}, r"\[0, 1100\)"),
])
def test_check_inputs_rejects_bad_input_with_one_line(inputs, match):
    # setup / execute / assert
    with pytest.raises(UserInputError, match=match) as e:
        check_inputs(inputs, IO)
    assert "\n" not in str(e.value)


def test_check_inputs_normalizes_dtype_to_int64():
    # setup
    inputs = {"input_ids": np.ones((2, 5), np.int32), "attention_mask": np.ones((2, 5), np.int32)}

    # execute
    ids, mask = check_inputs(inputs, IO)

    # assert
    assert ids.dtype == np.int64 and mask.dtype == np.int64 and ids.flags.c_contiguous
