"""Maps any *ForSequenceClassification output to {logits, hidden, attention} (TextBrewer's adaptor idea), so the
distiller never looks inside an architecture.

hidden[0] is the embedding output and hidden[i + 1] the output of transformer layer i (so a match's layer -1
is hidden[0]); attention[i] is layer i's attention distribution, shape (batch, heads, query, key).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch
from transformers.utils import ModelOutput

from edgecompress.families import family_of


@dataclass
class Adapted(ModelOutput):
    # A ModelOutput (not a dict) so DistributedDataParallel can walk it and `.logits` works like a HF output.
    logits: Optional[torch.Tensor] = None
    hidden: Optional[tuple] = None
    attention: Optional[tuple] = None


def adapt(model, inputs: dict, *, hidden: bool = False, attention: bool = False) -> Adapted:
    out = model(**inputs, output_hidden_states=hidden, output_attentions=attention, return_dict=True)
    if attention and (out.attentions is None or any(a is None for a in out.attentions)):
        from edgecompress.errors import RuntimeFailure
        raise RuntimeFailure(f"{type(model).__name__} returned no attention maps; attention matches need a model "
                             "loaded with attn_implementation='eager' (or drop the attention matches)")
    return Adapted(logits=out.logits, hidden=out.hidden_states if hidden else None,
                   attention=out.attentions if attention else None)


def hidden_width(model) -> int:
    return int(family_of(model).dims(model.config)["hidden_size"])


def _attn_impl(model) -> Optional[str]:
    return getattr(model.config, "_attn_implementation", None)


@contextlib.contextmanager
def eager_attention(*models, enabled: bool = True):
    """transformers 4.57's sdpa kernel returns no attention maps: switch to eager while attention matches need them,
    then restore (eager is slower, and the exported student should keep the faster kernel). Models that cannot switch
    at run time (BERT in 4.57 says so) are left alone: their sdpa layers fall back to eager per call when
    output_attentions=True, and `adapt` raises if a model still returns none."""
    saved = []
    try:
        if enabled:
            for m in models:
                impl = _attn_impl(m)
                can = getattr(m, "_can_set_attn_implementation", lambda: True)
                if impl != "eager" and can():
                    m.set_attn_implementation("eager")
                    saved.append((m, impl))
        yield
    finally:
        for m, impl in saved:
            if impl is not None and impl != "eager":
                m.set_attn_implementation(impl)
