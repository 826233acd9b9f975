"""Accuracy-aware fallback: which quantized layers to keep in fp32 so the accuracy drop fits the budget.

1. Sensitivity, per nn.Linear, in torch (format-independent and cheap): quantize that layer alone with fake quant
   (qat.fake_quant_linear: per-channel int8 weights, u8 activations) and measure
   - metric "sqnr": the logits' SQNR vs the fp32 model on a few batches (label-free; lower = more sensitive), or
   - metric "accuracy": the accuracy that layer alone costs on labelled rows (higher = more sensitive).
2. Selection, in the format's own quantizer (`search`): the exporter supplies only `build(excluded) -> InferFn`,
   the real int8 candidate with those layers left fp32 (onnxruntime nodes_to_exclude; PT2E modules left
   unannotated; quantize_dynamic without them); the driver runs it on the reference rows and measures the drop.
   Layers are excluded most-sensitive-first until the drop is within max_accuracy_drop or max_layers are
   excluded; the chosen list goes into ExportResult.details. `run` is the whole of it for an exporter.

Without labels the "accuracy" is agreement with the fp32 model's argmax, so the drop measured is the fraction of
flipped decisions: an upper bound of the true accuracy drop.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from edgecompress.export.quant.qat import linear_names, wrap

# (inputs) -> logits, as in export.base.InferFn (not imported: base imports this package).
Infer = Callable[[dict], np.ndarray]


@dataclass
class FallbackResult:
    excluded: list[str]
    drop: float                                   # accuracy drop with `excluded` kept fp32
    within_budget: bool
    ranking: list[tuple[str, float]] = field(default_factory=list)   # (layer, score), most sensitive first
    history: list[dict] = field(default_factory=list)                # one entry per drop() evaluation

    def to_json(self) -> dict:
        return {"excluded": self.excluded, "accuracy_drop": round(self.drop, 5), "within_budget": self.within_budget,
                "ranking": [[n, round(s, 3)] for n, s in self.ranking], "history": self.history}


def _logits(model, batches) -> np.ndarray:
    import torch
    from edgecompress.compress.train import to_torch
    with torch.no_grad():
        return np.concatenate([model(**to_torch(b)).logits.float().numpy() for b in batches])


def sensitivity(model, batches: list, metric: str = "sqnr", labels: Optional[np.ndarray] = None,
                names: Optional[list[str]] = None, static: bool = False, per_channel: bool = True) -> list[tuple[str, float]]:
    """[(layer, score)] sorted most sensitive first. sqnr: score = logits SQNR in dB (ascending);
    accuracy: score = accuracy drop when only that layer is quantized (descending)."""
    from edgecompress.export.parity import sqnr_db

    model = model.eval()
    ref = _logits(model, batches)
    y = ref.argmax(-1) if labels is None else np.asarray(labels)
    base = float(np.mean(ref.argmax(-1) == y))
    scores = []
    for n in (linear_names(model) if names is None else names):
        m = wrap(copy.deepcopy(model), [n], static=static, per_channel=per_channel).eval()
        if static:  # one pass to set the running ranges, as a calibration would
            _logits(m, batches)
        out = _logits(m, batches)
        scores.append((n, sqnr_db(ref, out) if metric == "sqnr" else base - float(np.mean(out.argmax(-1) == y))))
    return sorted(scores, key=lambda t: t[1], reverse=(metric != "sqnr"))


def choose(ranking: list[tuple[str, float]], drop: Callable[[list[str]], float], max_accuracy_drop: float,
           max_layers: int) -> FallbackResult:
    """Exclude the most sensitive layers one at a time until drop(excluded) <= max_accuracy_drop."""
    history = []
    excluded: list[str] = []
    d = drop(excluded)
    history.append({"excluded": 0, "accuracy_drop": round(d, 5)})
    for name, _ in ranking[:max_layers]:
        if d <= max_accuracy_drop:
            break
        excluded.append(name)
        d = drop(list(excluded))
        history.append({"excluded": len(excluded), "layer": name, "accuracy_drop": round(d, 5)})
    return FallbackResult(excluded, d, d <= max_accuracy_drop, ranking, history)


@dataclass(frozen=True)
class Reference:
    """The rows a candidate is judged on: input batches, their labels (the fp32 argmax when the rows are
    unlabelled) and the fp32 model's accuracy on them."""
    inputs: list[dict]
    labels: np.ndarray
    accuracy: float


def reference(model, labelled: list[tuple[dict, Optional[np.ndarray]]]) -> Reference:
    """The fp32 reference a candidate is judged against: labels fall back to the fp32 argmax."""
    inputs = [x for x, _ in labelled]
    ref = _logits(model, inputs).argmax(-1)
    ys = [y for _, y in labelled]
    labels = ref if any(y is None for y in ys) else np.concatenate([np.asarray(y) for y in ys])
    return Reference(inputs, labels, float(np.mean(ref == labels)))


def search(ref: Reference, ranking: list[tuple[str, float]], build: Callable[[list[str]], Infer],
           max_accuracy_drop: float, max_layers: int) -> FallbackResult:
    """The driver: build(excluded) makes the format's int8 candidate with `excluded` left fp32; its accuracy drop
    vs the fp32 reference decides whether the next layer of the ranking is excluded too."""
    def drop(excluded: list[str]) -> float:
        infer = build(excluded)
        preds = np.concatenate([np.asarray(infer(x)).argmax(-1) for x in ref.inputs])
        return ref.accuracy - float(np.mean(preds == ref.labels))

    return choose(ranking, drop, max_accuracy_drop, max_layers)


def run(fp32_model, model, quant, calib, build: Callable[[list[str]], Infer],
        names: Optional[list[str]] = None) -> FallbackResult:
    """quant.fallback for one exporter: reference rows from calib, the ranking of `names` (every nn.Linear when
    None) in `model` (the torch model the format quantizes), then the search with the format's build()."""
    from edgecompress.export.quant import labelled

    fb = quant.fallback
    ref = reference(fp32_model, labelled(calib, fb.samples))
    # SQNR compares every logit, so 4 batches rank the layers; accuracy counts flipped decisions and needs every row.
    ranking = sensitivity(model, ref.inputs[:4] if fb.metric == "sqnr" else ref.inputs, fb.metric,
                          ref.labels if fb.metric == "accuracy" else None, names,
                          static=quant.activations == "static", per_channel=quant.per_channel)
    return search(ref, ranking, build, fb.max_accuracy_drop, fb.max_layers)
