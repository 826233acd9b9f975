"""The embedding task: a sentence encoder whose forward is `encoder -> pooled -> (projected) -> (L2-normalised)` vector.

The model is the family's own headless encoder class (BertModel, RobertaModel, ...) with only `forward` overridden,
so everything that works on a transformers model works on it unchanged: slicing a student from its layers
(`type(teacher)(config)`), the family table, pruning, vocabulary trimming, `save_pretrained`, tracing for export.
Its output is returned where a classifier returns logits (`.logits`, or `[0]` with return_dict=False), so the
distiller's adaptor, the exporters' wrapper and parity read it without knowing the task. The pooling lives in the
model's config (`embedding_pooling`, `embedding_normalize`), so a saved student carries it, and every saved folder is
also a sentence-transformers folder (modules.json, 1_Pooling). embedding.dim adds `embedding_projection`, a bias-free
nn.Linear between pooling and normalisation (config `embedding_dim`; a `2_Dense` module in the sentence-transformers
folder), made by modeling.set_embedding_projection.
"""
from __future__ import annotations

from pathlib import Path

from edgecompress.pooling import Pooling, write_st_folder
from edgecompress.registry import TASKS

_CLASSES: dict = {}  # base encoder class -> its embedder subclass: one class per base, so type() is stable


def pool(hidden, attention_mask, mode: str, normalize: bool):
    """[batch, seq, width] token states -> [batch, width]; padded positions never count."""
    import torch
    import torch.nn.functional as F
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        vec = hidden[:, 0]
    elif mode == "max":
        vec = hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    else:
        vec = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    return F.normalize(vec, p=2.0, dim=-1) if normalize else vec


def embedder_class(base: type) -> type:
    """The subclass of a headless encoder class whose forward returns the pooled sentence vector."""
    if base in _CLASSES:
        return _CLASSES[base]
    from transformers.modeling_outputs import SequenceClassifierOutput

    def __init__(self, config, *args, **kw):
        base.__init__(self, config, *args, **kw)
        dim = getattr(config, "embedding_dim", None)
        if dim:  # from_pretrained then fills the weight from the saved folder
            import torch
            from edgecompress.modeling import set_embedding_projection
            set_embedding_projection(self, torch.zeros(int(dim), _width(self)))

    def forward(self, input_ids=None, attention_mask=None, output_hidden_states=None, output_attentions=None,
                return_dict=None, **kw):
        import torch
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = base.forward(self, input_ids=input_ids, attention_mask=attention_mask,
                           output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                           return_dict=True, **kw)
        vec = pool(out.last_hidden_state, attention_mask, self.config.embedding_pooling, False)
        if getattr(self, "embedding_projection", None) is not None:  # embedding.dim: before the normalisation
            vec = self.embedding_projection(vec)
        if self.config.embedding_normalize:
            import torch.nn.functional as F
            vec = F.normalize(vec, p=2.0, dim=-1)
        if return_dict is False:
            return (vec,)
        return SequenceClassifierOutput(logits=vec, hidden_states=out.hidden_states, attentions=out.attentions)

    def save_pretrained(self, save_directory, *args, **kw):
        base.save_pretrained(self, save_directory, *args, **kw)
        proj = getattr(self, "embedding_projection", None)
        write_st_folder(Path(save_directory), pooling_of(self), _width(self),
                        None if proj is None else proj.weight.detach().float().cpu().numpy())

    _CLASSES[base] = type(f"{base.__name__}Embedder", (base,), {
        "__init__": __init__, "forward": forward, "save_pretrained": save_pretrained, "__module__": __name__,
        "__doc__": f"{base.__name__} whose forward returns the pooled sentence vector (edgecompress.embedding)."})
    return _CLASSES[base]


def pooling_of(model) -> Pooling:
    return Pooling(model.config.embedding_pooling, bool(model.config.embedding_normalize))


def _width(model) -> int:
    """The encoder's hidden size: what pooling yields, before any projection."""
    from edgecompress.compress.adaptor import hidden_width
    return hidden_width(model)


def output_dim(model) -> int:
    """The vector's width: embedding.dim where the model has a projection, else the encoder's."""
    return int(getattr(model.config, "embedding_dim", None) or _width(model))


def load_embedder(path: Path, pooling: Pooling | None = None):
    """A folder's encoder as an embedder; `pooling` given for a teacher (resolved by plan), else the saved config's."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING
    from edgecompress.errors import UserInputError
    cfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
    if pooling is not None:
        cfg.embedding_pooling, cfg.embedding_normalize = pooling.mode, pooling.normalize
    if getattr(cfg, "embedding_pooling", None) is None:
        raise UserInputError(f"{path}: no embedding pooling in config.json; this folder was not saved by an "
                             f"embedding run")
    cls = embedder_class(MODEL_MAPPING[type(cfg)])
    return cls.from_pretrained(str(path), config=cfg, local_files_only=True, use_safetensors=True).eval()


@TASKS.register("embedding")
class Embedding:
    @staticmethod
    def load_teacher(path: Path, pooling: Pooling):
        return load_embedder(path, pooling)

    @staticmethod
    def load_artifact_model(path: Path):
        return load_embedder(path)

    @staticmethod
    def evaluate(model, batches, placement) -> dict:
        """The teacher's own probe on the test split: leave-one-out kNN@10 accuracy of the data's label."""
        import numpy as np
        from edgecompress.compress.train import predict_logits
        from edgecompress.retrieval import knn_accuracy
        vecs = predict_logits(model, batches, placement)
        labels = np.zeros(len(vecs), dtype=np.int64)
        for _, y, idx in batches:
            labels[idx] = y
        out = {"dim": int(vecs.shape[1])}
        if len(np.unique(labels)) > 1:  # unlabelled text (every label 0) has nothing to probe
            out["test_knn_label_accuracy"] = knn_accuracy(vecs, labels)
        return out

    @staticmethod
    def io_fields(model) -> dict:
        """What io.json says of the output: one `embedding` of output_dim floats per row."""
        return {"num_labels": output_dim(model), "output_name": "embedding"}
