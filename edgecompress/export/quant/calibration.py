"""Calibration data, streamed: rows come from an iterator, a few batches at a time, never all at once.

onnxruntime#10503: static BERT calibration passed 100 GB because the calibrator kept every intermediate tensor of
every sample until the end. Two things keep memory bounded here:
- `rebatch` pulls rows lazily from whatever the caller gives (a list, a generator) and yields fixed-size batches;
- `StreamingReader` is an onnxruntime CalibrationDataReader with `__len__`/`set_range`, so quantize_static's
  "CalibStridedMinMax" option collects ranges `stride` batches at a time and merges them (MinMax merges ranges,
  Percentile/Entropy merge histograms): peak memory ~ stride batches of intermediates, independent of N.

`CalibData` is what the pipeline hands an exporter as `calib`: iterating it yields input batches (exactly what a
plain list of batches gives, so older callers and tests keep working); it also carries labelled train rows (QAT)
and labelled validation rows (fallback) when the pipeline has them.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from edgecompress.recipe import KDLoss

Batch = dict[str, np.ndarray]
Labelled = tuple[Batch, np.ndarray]


@dataclass
class CalibData:
    inputs: Callable[[], Iterable[Batch]]                      # a fresh iterator of input batches per call
    train: Optional[Callable[[], list]] = None                  # -> [(inputs, labels, row_idx)] for QAT
    validation: Optional[Callable[[], list[Labelled]]] = None   # -> [(inputs, labels)] for fallback
    kd: KDLoss = KDLoss()                                       # QAT's loss: the recipe's distillation weights
    # Where QAT trains (compute.Placement; None: the CPU). Calibration itself stays on the CPU: onnxruntime
    # calibrates the ONNX file and PT2E the exported CPU graph, so no exporter can take it to an accelerator.
    placement: Optional[object] = None

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.inputs())


def input_batches(calib) -> Iterator[Batch]:
    """Input dicts from a CalibData, a list of dicts, or a list of (inputs, labels[, idx]) tuples."""
    if calib is None:
        return iter(())
    return (b[0] if isinstance(b, tuple) else b for b in calib)


def rebatch(batches: Iterable[Batch], rows: int, batch_size: int, pad_id: int = 0) -> Iterator[Batch]:
    """At most `rows` rows from `batches`, re-cut into batches of `batch_size` (each padded to its own longest row,
    trimmed of all-pad columns). Lazy: holds one output batch plus one input batch."""
    buf: list[tuple[np.ndarray, np.ndarray]] = []
    left = rows
    for b in batches:
        ids, mask = np.asarray(b["input_ids"]), np.asarray(b["attention_mask"])
        for r in range(ids.shape[0]):
            if left <= 0:
                break
            n = int(mask[r].sum()) or ids.shape[1]
            buf.append((ids[r, :n], mask[r, :n]))
            left -= 1
            if len(buf) == batch_size:
                yield _pad(buf, pad_id)
                buf = []
        if left <= 0:
            break
    if buf:
        yield _pad(buf, pad_id)


def _pad(rows: list[tuple[np.ndarray, np.ndarray]], pad_id: int) -> Batch:
    width = max(len(i) for i, _ in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for r, (i, m) in enumerate(rows):
        ids[r, :len(i)] = i
        mask[r, :len(m)] = m
    return {"input_ids": ids, "attention_mask": mask}


def make_reader(batches: Iterable[Batch], n_batches: int, input_names: list[str]):
    """An onnxruntime CalibrationDataReader that streams `batches` (consumed once, in order)."""
    from onnxruntime.quantization import CalibrationDataReader

    class StreamingReader(CalibrationDataReader):
        """quantize_static with CalibStridedMinMax calls len(), then set_range(start, end) for consecutive strides
        and drains get_next() each time: we hand out the next rows of the stream for each range."""

        def __init__(self):
            self._it = iter(batches)
            self._left = n_batches      # batches the current range may still hand out
            self.seen = 0

        def __len__(self) -> int:
            return n_batches

        def set_range(self, start_index: int, end_index: int) -> None:
            self._left = end_index - start_index

        def get_next(self):
            if self._left <= 0:
                return None
            b = next(self._it, None)
            if b is None:
                return None
            self._left -= 1
            self.seen += 1
            return {n: np.ascontiguousarray(b[n], dtype=np.int64) for n in input_names}

    return StreamingReader()


def stride_for(n_batches: int, max_stride: int = 4) -> int:
    """Largest divisor of n_batches that is <= max_stride (quantize_static requires len % stride == 0)."""
    for s in range(min(max_stride, n_batches), 0, -1):
        if n_batches % s == 0:
            return s
    return 1


def count_batches(rows: int, batch_size: int) -> int:
    return -(-rows // batch_size)


def take(it: Iterable, n: int) -> list:
    return list(itertools.islice(it, n))
