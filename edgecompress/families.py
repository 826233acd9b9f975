"""The one table of model families: for each HF `model_type`, where its layers, attention projections, FFN,
embeddings, LayerNorms and classifier live (attribute paths), which tokenizer model it ships, whether its config
can rebuild per-layer head counts, and what its config.json calls layers/width/heads/FFN.

Torch-free on purpose, like formats.py: `plan` reads it to refuse a family or a stage x family it cannot run
(check_family) before any work, and every stage reaches into a model only through a row of this table (paths are
resolved with getattr, so nothing here imports torch). Adding a family is one `Family` row here plus a tiny model of
it in edgecompress/zoo.py; the contract test then runs every stage and the ONNX export on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import reduce
from typing import Iterable, Literal, Optional

from edgecompress.errors import UserInputError

TokenizerModel = Literal["WordPiece", "BPE", "Unigram"]
# The canonical names every stage uses (BertConfig's); a Family maps them to its own config.json fields.
DIMS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")


@dataclass(frozen=True)
class LayerPaths:
    """Module paths inside one transformer layer."""
    qkv: tuple[str, ...]           # the Q, K, V projections, or one fused projection whose rows are [Q; K; V]
    attn_out: str                  # output projection: its input columns are the heads
    ffn_in: str
    ffn_out: str
    attention: str                 # the module that holds the head count
    heads_attr: str                # ... its attribute names: head count, head size, all heads' width
    head_size_attr: str
    all_head_attr: str
    ffn_glu: bool = False          # ffn_in rows are [input; gate] (2 x intermediate): a neuron is a row in each half
    pruned_heads_on: str = "attention"  # the module whose `pruned_heads` set HF's prune_heads keeps
    # Projections of relative-position embeddings into the heads (DeBERTa without shared keys): head rows too.
    extra_head_rows: tuple[str, ...] = ()

    @property
    def fused(self) -> bool:
        return len(self.qkv) == 1


@dataclass(frozen=True)
class FamilyRefusal:
    """A stage kind ("prune_structured") or an export ("export:<format>-<precision>") this family cannot run, and
    why (one line with the fix). field: the stage config field that triggers it when truthy (None: always)."""
    what: str
    reason: str
    field: Optional[str] = None


@dataclass(frozen=True)
class Family:
    model_type: str
    base: str                       # base_model_prefix: the attribute of *ForSequenceClassification holding the encoder
    layers: str                     # path under the base model to the list of layers
    layer: LayerPaths
    word_embeddings: str            # path under the base model
    position_embeddings: Optional[str]   # None: positions are rotary / relative, no table
    classifier: str                 # path (from the top model) of the Linear that produces the logits
    layer_norms: tuple[str, ...]    # name suffixes of every LayerNorm weight (their gammas rank hidden dims)
    tokenizer: TokenizerModel       # the tokenizer model its checkpoints ship with
    tokenizer_files: tuple[str, ...]  # any one of these in the model folder is a tokenizer
    # HF's prune_heads exists and config.pruned_heads rebuilds per-layer head counts in from_pretrained: without
    # it, a model with cut heads could not be reloaded from config.json, so heads are not cut (FFN still is).
    prune_heads: bool
    fields: tuple[str, str, str, str] = DIMS   # this config's names for DIMS, in order
    # Config fields that equal hidden_size in the teacher and must follow a narrower student's width (else the
    # student keeps e.g. a projection it does not need or a pooler of the old width).
    follow_hidden: tuple[str, ...] = ()
    embedding_width: Optional[str] = None  # config field of the embedding width when it may differ from hidden_size
    # Position ids are numbered from pad_token_id + 1 (RoBERTa): trimming the vocabulary must keep the pad id.
    positions_from_pad: bool = False
    # Layer tensors some layers lack (ModernBERT's first layer has no attention norm: the embedding norm precedes it).
    optional_layer_tensors: tuple[str, ...] = ()
    refuses: tuple[FamilyRefusal, ...] = field(default_factory=tuple)

    # -- config.json (a dict) or a transformers config ----------------------------------------------------------
    def dims(self, cfg) -> dict:
        """{num_hidden_layers, hidden_size, num_attention_heads, intermediate_size} under the canonical names."""
        get = cfg.get if isinstance(cfg, dict) else (lambda k: getattr(cfg, k, None))
        return {canon: get(own) for canon, own in zip(DIMS, self.fields)}

    def set_dims(self, config, **values) -> None:
        """Set canonical DIMS on a transformers config under this family's field names."""
        own = dict(zip(DIMS, self.fields))
        for k, v in values.items():
            setattr(config, own[k], v)

    def refusal(self, what: str, cfg=None) -> Optional[str]:
        for r in self.refuses:
            if r.what == what and (r.field is None or getattr(cfg, r.field, None)):
                return r.reason
        return None

    # -- a model (paths resolved with getattr: no torch here) ---------------------------------------------------
    def layer_list(self, model) -> list:
        return list(attr(model.base_model, self.layers))

    def layer_prefix(self, model) -> str:
        """The state-dict / module-name prefix of layer i is layer_prefix + f"{i}."."""
        return f"{model.base_model_prefix}.{self.layers}." if model.base_model is not model else f"{self.layers}."

    def head_row_modules(self, layer) -> list:
        """Linears whose output rows are the heads (Q, K, V or the fused QKV; DeBERTa's position projections)."""
        paths = self.layer.qkv + self.layer.extra_head_rows
        return [m for m in (attr(layer, p, None) for p in paths) if m is not None]

    def head_blocks(self) -> int:
        """How many all-heads-wide blocks of rows each head-row projection has (3 when Q, K, V are fused)."""
        return 3 if self.layer.fused else 1

    def heads(self, layer) -> tuple[int, int]:
        """(head count, head size) of one layer as it is now (after any cut)."""
        a = attr(layer, self.layer.attention)
        return int(getattr(a, self.layer.heads_attr)), int(getattr(a, self.layer.head_size_attr))

    def classifier_weight(self) -> str:
        return f"{self.classifier}.weight"


def attr(obj, path: str, *default):
    """obj.a.b.c for path "a.b.c" (default when given and a step is missing)."""
    try:
        return reduce(getattr, path.split("."), obj)
    except AttributeError:
        if default:
            return default[0]
        raise


_BERT_LAYER = LayerPaths(qkv=("attention.self.query", "attention.self.key", "attention.self.value"),
                         attn_out="attention.output.dense", ffn_in="intermediate.dense", ffn_out="output.dense",
                         attention="attention.self", heads_attr="num_attention_heads",
                         head_size_attr="attention_head_size", all_head_attr="all_head_size")
_WORDPIECE_FILES = ("tokenizer.json", "vocab.txt")
_NO_HEAD_CUT = "cannot have its attention heads cut: {why}; set heads_fraction: 0 (FFN neurons are still cut)"


def _bert_like(model_type: str, base: str, classifier: str, tokenizer: TokenizerModel, files: tuple[str, ...],
               **kw) -> Family:
    return Family(model_type, base, "encoder.layer", _BERT_LAYER, "embeddings.word_embeddings",
                  "embeddings.position_embeddings", classifier, ("LayerNorm.weight",), tokenizer, files,
                  prune_heads=True, **kw)


FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    _bert_like("bert", "bert", "classifier", "WordPiece", _WORDPIECE_FILES),
    Family("distilbert", "distilbert", "transformer.layer",
           LayerPaths(qkv=("attention.q_lin", "attention.k_lin", "attention.v_lin"), attn_out="attention.out_lin",
                      ffn_in="ffn.lin1", ffn_out="ffn.lin2", attention="attention", heads_attr="n_heads",
                      head_size_attr="attention_head_size", all_head_attr="dim"),
           "embeddings.word_embeddings", "embeddings.position_embeddings", "classifier",
           ("LayerNorm.weight", "layer_norm.weight"), "WordPiece", _WORDPIECE_FILES, prune_heads=True,
           fields=("n_layers", "dim", "n_heads", "hidden_dim")),
    _bert_like("roberta", "roberta", "classifier.out_proj", "BPE", ("tokenizer.json", "vocab.json"),
               positions_from_pad=True),
    _bert_like("xlm-roberta", "roberta", "classifier.out_proj", "Unigram",
               ("tokenizer.json", "sentencepiece.bpe.model"), positions_from_pad=True),
    _bert_like("electra", "electra", "classifier.out_proj", "WordPiece", _WORDPIECE_FILES,
               follow_hidden=("embedding_size",), embedding_width="embedding_size"),
    Family("deberta-v2", "deberta", "encoder.layer",
           LayerPaths(qkv=("attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj"),
                      attn_out="attention.output.dense", ffn_in="intermediate.dense", ffn_out="output.dense",
                      attention="attention.self", heads_attr="num_attention_heads",
                      head_size_attr="attention_head_size", all_head_attr="all_head_size",
                      extra_head_rows=("attention.self.pos_key_proj", "attention.self.pos_query_proj")),
           "embeddings.word_embeddings", "embeddings.position_embeddings", "classifier", ("LayerNorm.weight",),
           "Unigram", ("tokenizer.json", "spm.model"), prune_heads=False,
           follow_hidden=("pooler_hidden_size", "embedding_size"), embedding_width="embedding_size",
           refuses=(FamilyRefusal("prune_structured", _NO_HEAD_CUT.format(
               why="DeBERTa has no prune_heads and its config has one head count for every layer"), "heads_fraction"),)),
    Family("modernbert", "model", "layers",
           LayerPaths(qkv=("attn.Wqkv",), attn_out="attn.Wo", ffn_in="mlp.Wi", ffn_out="mlp.Wo", attention="attn",
                      heads_attr="num_heads", head_size_attr="head_dim", all_head_attr="all_head_size", ffn_glu=True),
           "embeddings.tok_embeddings", None, "classifier", ("norm.weight",), "BPE", ("tokenizer.json",),
           prune_heads=False, optional_layer_tensors=("attn_norm.weight", "attn_norm.bias"),
           refuses=(FamilyRefusal("prune_structured", _NO_HEAD_CUT.format(
               why="ModernBERT derives its head size from hidden_size / num_attention_heads and its output "
                   "projection is hidden_size wide, so a model with fewer heads cannot be rebuilt from config.json"),
               "heads_fraction"),)),
)}
FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)
HOW_TO_ADD = "to add a family, declare its adapter (one Family row) in edgecompress/families.py"


def family_for(model_type) -> Family:
    fam = FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if fam is None:
        raise UserInputError(f"model_type {str(model_type)[:60]!r} is not supported; supported: "
                             f"{', '.join(FAMILY_NAMES)}; {HOW_TO_ADD}")
    return fam


def family_of(model) -> Family:
    """The Family of a loaded transformers model."""
    return family_for(getattr(model.config, "model_type", None))


def canonical(cfg: dict) -> dict:
    """config.json with the canonical DIMS added (DistilBERT says n_layers/dim/n_heads/hidden_dim), so `plan`
    and the stages read one set of names. Unknown families pass through unchanged."""
    fam = FAMILIES.get(cfg.get("model_type")) if isinstance(cfg.get("model_type"), str) else None
    if fam is None:
        return cfg
    return {**cfg, **{k: v for k, v in fam.dims(cfg).items() if v is not None}}


def check_family(model_type, stages: Iterable = (), formats: Iterable[str] = (),
                 precisions: Iterable[str] = ("fp32", "int8")) -> Family:
    """Refuse, in one line, a family that is unknown, or a stage / export this family cannot run.
    stages: recipe stage configs (with .kind); formats x precisions: the exports. Torch-free, for `plan`."""
    fam = family_for(model_type)
    for i, s in enumerate(stages):
        why = fam.refusal(s.kind, s)
        if why:
            raise UserInputError(f"stages[{i}] ({s.kind}): {fam.model_type} {why}")
    precisions = tuple(precisions)
    for fmt in formats:
        for p in precisions:
            why = fam.refusal(f"export:{fmt}-{p}")
            if why:
                raise UserInputError(f"export.formats: {fmt} {p} cannot export {fam.model_type}: {why}")
    return fam
