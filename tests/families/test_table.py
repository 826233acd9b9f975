"""The family table (edgecompress/families.py) against the real transformers classes: every path resolves to the
module it names, the config field names are the family's, and `plan`'s checks read each family's folder."""
from __future__ import annotations

import json

import pytest
import torch

from edgecompress.compress.structured import heads_per_layer
from edgecompress.errors import UserInputError
from edgecompress.families import FAMILIES, attr, canonical, check_family, family_for, family_of
from edgecompress.model_dir import check_model_dir
from edgecompress.modeling import SUPPORTED_MODEL_TYPES
from edgecompress.recipe import PruneCfg, StructuredPruneCfg, VocabTrimCfg
from edgecompress.zoo import FAMILIES as ZOO

SIZE = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 37}


def test_every_supported_family_has_a_tiny_model_in_the_zoo():
    # assert: a row without a zoo model would never be run by the contract tests
    assert set(ZOO) == set(FAMILIES) == set(SUPPORTED_MODEL_TYPES)


@pytest.mark.parametrize("family", ZOO)
def test_every_path_in_the_row_names_the_module_it_claims(zoo, family):
    # setup
    model, tok = zoo.load(family)
    fam = family_of(model)
    # execute
    layers = fam.layer_list(model)
    # assert: base, layers, projections, embeddings, classifier, LayerNorms, head attributes
    assert fam.base == model.base_model_prefix and fam.dims(model.config) == SIZE
    assert len(layers) == 2
    for layer in layers:
        for path in fam.layer.qkv + (fam.layer.attn_out, fam.layer.ffn_in, fam.layer.ffn_out):
            assert isinstance(attr(layer, path), torch.nn.Linear), path
        assert fam.heads(layer) == (4, 8)
        assert attr(layer, fam.layer.ffn_in).out_features == 37 * (2 if fam.layer.ffn_glu else 1)
    assert attr(model.base_model, fam.word_embeddings) is model.get_input_embeddings()
    pos = attr(model.base_model, fam.position_embeddings) if fam.position_embeddings else None
    if pos is not None:  # DeBERTa-v3 has the attribute but no table (position_biased_input: false)
        assert pos.num_embeddings >= 128
    assert attr(model, fam.classifier).out_features == 2
    norms = [k for k in model.state_dict() if k.endswith(fam.layer_norms)]
    assert len(norms) >= 2 * 2
    assert heads_per_layer(model) == [4, 4]


@pytest.mark.parametrize("family", ZOO)
def test_prune_heads_flag_and_tokenizer_model_match_the_library(zoo, family):
    # setup
    model, tok = zoo.load(family)
    fam = family_for(family)
    # execute: does HF's prune_heads exist and work on this family?
    try:
        model.prune_heads({0: [0]})
        works = True
    except (NotImplementedError, AttributeError):
        works = False
    spec = json.loads(tok.backend_tokenizer.to_str())
    # assert
    assert works == fam.prune_heads
    assert spec["model"]["type"] == fam.tokenizer


@pytest.mark.parametrize("family", ZOO)
def test_plan_reads_each_family_folder(zoo, family, tmp_path):
    # setup
    d = zoo.folder(family)
    # execute
    cfg = check_model_dir(d)
    # assert: head size found, canonical names present whatever the family calls them
    assert cfg["_head_labels"] == 2
    assert {k: cfg[k] for k in SIZE} == SIZE


@pytest.mark.parametrize("family", ZOO)
def test_a_config_that_contradicts_the_weights_is_refused_for_every_family(zoo, family, tmp_path):
    # setup: double the width in config.json only
    import shutil
    d = tmp_path / "t"
    shutil.copytree(zoo.folder(family), d)
    cfg = json.loads((d / "config.json").read_text())
    width = family_for(family).fields[1]
    cfg[width] *= 2
    (d / "config.json").write_text(json.dumps(cfg))
    # execute / assert
    with pytest.raises(UserInputError, match="has shape .* but config.json says"):
        check_model_dir(d)


def test_unknown_family_names_the_supported_ones_and_how_to_add_one():
    # execute / assert
    with pytest.raises(UserInputError) as e:
        check_family("gpt2")
    msg = str(e.value)
    assert "'gpt2' is not supported" in msg and all(f in msg for f in FAMILIES) and "families.py" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("family", ZOO)
def test_check_family_refuses_exactly_the_declared_stage_and_format_gaps(family):
    # setup
    fam = family_for(family)
    stages = [PruneCfg(), StructuredPruneCfg(ffn_fraction=0.5), VocabTrimCfg()]
    # execute / assert: FFN-only pruning and the other stages pass for every family
    check_family(family, stages, ["onnx", "ptl", "tflite"], ["fp32", "int8"])
    heads = [StructuredPruneCfg(heads_fraction=0.25)]
    if fam.prune_heads:
        check_family(family, heads)
    else:
        with pytest.raises(UserInputError, match=rf"stages\[0\] \(prune_structured\): {family} .*heads_fraction: 0"):
            check_family(family, heads)
    refused_pte = any(r.what == "export:pte-int8" for r in fam.refuses)
    check_family(family, [], ["pte"], ["fp32"])
    if refused_pte:
        with pytest.raises(UserInputError, match=f"export.formats: pte int8 cannot export {family}"):
            check_family(family, [], ["pte"], ["int8"])
    else:
        check_family(family, [], ["pte"], ["int8"])


def test_canonical_adds_bert_names_to_a_distilbert_config():
    # execute
    cfg = canonical({"model_type": "distilbert", "n_layers": 6, "dim": 768, "n_heads": 12, "hidden_dim": 3072})
    # assert
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"]) == \
        (6, 768, 12, 3072)
    assert canonical({"model_type": "gpt2", "n_layer": 2}) == {"model_type": "gpt2", "n_layer": 2}
