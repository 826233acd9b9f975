"""What the exporters share to realize a QuantSpec beyond dynamic int8: calibration streaming, k-means codebooks,
QAT, accuracy-aware fallback. Torch-side steps (QAT, codebook clustering) run here once, before the format's own
quantizer; format-specific steps live in each exporter.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from edgecompress.export.quant.calibration import CalibData, input_batches, rebatch
from edgecompress.recipe import KDLoss


def labelled(calib, rows: int, batch_size: int = 32) -> list[tuple[dict, Optional[np.ndarray]]]:
    """Up to `rows` labelled validation rows from a CalibData (else unlabelled calib inputs, labels None)."""
    if isinstance(calib, CalibData) and calib.validation is not None:
        out, n = [], 0
        for x, y in calib.validation():
            if n >= rows:
                break
            k = min(rows - n, len(y))
            out.append(({key: v[:k] for key, v in x.items()}, np.asarray(y)[:k]))
            n += k
        return out
    return [(b, None) for b in rebatch(input_batches(calib), rows, batch_size)]


def train_rows(calib, rows: Optional[int], batch_size: int) -> list:
    """[(inputs, labels or None, idx)] for QAT: labelled train rows when the pipeline gave them, else calib inputs."""
    if isinstance(calib, CalibData) and calib.train is not None:
        out, n = [], 0
        for x, y, idx in calib.train():
            if rows is not None and n >= rows:
                break
            out.append((x, y, idx))
            n += len(y)
        return out
    return [(b, None, None) for b in rebatch(input_batches(calib), rows or 10**9, batch_size)]


def prepare_torch(model, quant, calib, embeddings_default: bool) -> tuple[object, list[str], dict]:
    """Apply the torch-side parts of the intent (QAT, codebook clustering). Returns (model, notes, details)."""
    notes: list[str] = []
    details: dict = {}
    if quant is None:
        return model, notes, details
    if quant.qat is not None:
        from edgecompress.export.quant.qat import qat_finetune
        batches = train_rows(calib, quant.qat.max_train_samples, quant.qat.batch_size)
        kd = getattr(calib, "kd", None) or KDLoss()
        model, res = qat_finetune(model, batches, quant.qat, static=quant.activations == "static",
                                  per_channel=quant.per_channel, alpha=kd.alpha, temperature=kd.temperature,
                                  placement=getattr(calib, "placement", None))
        notes.append(f"QAT: {len(batches)} batches x {quant.qat.epochs} epoch(s) of fake-quant fine-tuning under "
                     f"distillation from the fp32 model ({quant.activations} activations simulated)")
        details["qat"] = {"batches": len(batches), "seconds": round(res.seconds, 1),
                          "best_val_accuracy": res.best_val_accuracy, "history": res.history}
    if quant.weights == "codebook":
        from edgecompress.export.quant.codebook import cluster_model
        emb = embeddings_default if quant.embeddings is None else quant.embeddings
        model, report = cluster_model(model, quant.codebook_bits, embeddings=emb)
        details["codebook"] = {"bits": quant.codebook_bits, "layers": len(report), "embeddings": emb,
                               "min_weight_sqnr_db": min((r["weight_sqnr_db"] for r in report), default=None)}
    return model, notes, details


def flavour_text(quant) -> str:
    return (f"{quant.activation_type} activations x {quant.weight_type} weights, "
            f"{'per channel' if quant.per_channel else 'per tensor'}{', reduce_range' if quant.reduce_range else ''}")
