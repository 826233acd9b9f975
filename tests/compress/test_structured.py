"""Structured pruning: heads and FFN neurons physically removed, config updated, reload and ONNX export work."""
import copy

import numpy as np
import pytest
import torch

from edgecompress.compress.base import StageContext
from edgecompress.compress.structured import choose_heads, heads_per_layer, prune_structured
from edgecompress.modeling import count_params
from edgecompress.recipe import StructuredPruneCfg

HIDDEN, HEAD = 32, 8  # tiny_vocab_bert: hidden 32, 4 heads of 8, intermediate 37, 2 layers


def _inputs(tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


@pytest.fixture(scope="module")
def pruned(minilm_tokenizer, small_splits):
    """(original, pruned model, its metrics), built once for the module: the tests below only read them."""
    from edgecompress.zoo import tiny_bert_with_real_vocab
    model = tiny_bert_with_real_vocab()
    original = copy.deepcopy(model)
    ctx = StageContext(small_splits, 64)
    cfg = StructuredPruneCfg(heads_fraction=0.375, ffn_fraction=0.5, importance="taylor", calibration_batches=2)
    res = prune_structured(model, minilm_tokenizer, cfg, ctx)
    return original, res.model, res.metrics


def test_matrices_shrink_by_exactly_the_removed_heads_and_neurons(pruned):
    # setup
    original, model, metrics = pruned
    # assert: 3 of 8 heads gone (per-layer counts may differ, each >= 1), 18 of 37 neurons per layer gone
    heads = heads_per_layer(model)
    assert sum(heads) == 5 and min(heads) >= 1
    assert model.config.intermediate_size == 37 - 18
    per_head = 3 * (HIDDEN * HEAD + HEAD) + HIDDEN * HEAD       # Q/K/V rows + biases, O columns
    per_neuron = HIDDEN + 1 + HIDDEN                            # FFN-in row + bias, FFN-out column
    assert count_params(model) == count_params(original) - 3 * per_head - 2 * 18 * per_neuron
    for li, layer in enumerate(model.bert.encoder.layer):
        assert layer.attention.self.query.weight.shape == (heads[li] * HEAD, HIDDEN)
        assert layer.attention.output.dense.weight.shape == (HIDDEN, heads[li] * HEAD)
        assert layer.intermediate.dense.weight.shape == (19, HIDDEN)
        assert layer.output.dense.weight.shape == (HIDDEN, 19)
    assert sum(len(v) for v in model.config.pruned_heads.values()) == 3
    assert metrics["params"] == count_params(model)


def test_cutting_equals_masking_the_same_heads_and_neurons(tiny_vocab_bert, minilm_tokenizer, small_splits):
    # setup: the reference is the unpruned model with the removed heads masked and removed neurons zeroed
    # (GELU(0) = 0, so a neuron with zero in-row and bias contributes nothing)
    ref = copy.deepcopy(tiny_vocab_bert)
    ref.config._attn_implementation = "eager"  # head_mask needs the eager attention path
    ctx = StageContext(small_splits, 64)
    # execute
    model = prune_structured(tiny_vocab_bert, minilm_tokenizer, StructuredPruneCfg(heads_fraction=0.25, ffn_fraction=0.3,
                                                                                   importance="magnitude"), ctx).model
    # assert
    head_mask = torch.ones(2, 4)
    for li, heads in model.config.pruned_heads.items():
        head_mask[li, heads] = 0
    for lr, lp in zip(ref.bert.encoder.layer, model.bert.encoder.layer):
        w_ref, w_new = lr.intermediate.dense.weight.detach(), lp.intermediate.dense.weight.detach()
        kept = [int((w_ref - row).abs().sum(1).argmin()) for row in w_new]
        gone = sorted(set(range(w_ref.shape[0])) - set(kept))
        with torch.no_grad():
            lr.intermediate.dense.weight[gone] = 0
            lr.intermediate.dense.bias[gone] = 0
    x = _inputs(minilm_tokenizer, ["a great day", "the service was terribly slow and the food cold"])
    with torch.no_grad():
        expected = ref(**x, head_mask=head_mask).logits
    torch.testing.assert_close(_logits(model, x), expected, atol=1e-5, rtol=0)


def test_saved_model_reloads_smaller_with_the_same_outputs(pruned, minilm_tokenizer, tmp_path):
    # setup
    from transformers import AutoModelForSequenceClassification
    _, model, _ = pruned
    x = _inputs(minilm_tokenizer, ["not bad at all", "worst movie ever, I want my money back!!"])
    before = _logits(model, x)
    # execute
    model.save_pretrained(str(tmp_path), safe_serialization=True)
    reloaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path), local_files_only=True).eval()
    # assert
    assert heads_per_layer(reloaded) == heads_per_layer(model)
    assert count_params(reloaded) == count_params(model)
    torch.testing.assert_close(_logits(reloaded, x), before, atol=1e-5, rtol=0)


def test_onnx_export_of_a_pruned_model_runs_in_onnxruntime(pruned, tmp_path):
    # setup
    from edgecompress.export.base import IOSpec
    from edgecompress.export.onnx import OnnxExporter
    _, model, _ = pruned
    io = IOSpec(vocab_size=model.config.vocab_size, num_labels=2, max_seq_len=64)
    # execute
    res = OnnxExporter().export(model, io, None, None, tmp_path)
    infer = OnnxExporter().load(res.file)
    # assert: parity at shapes other than the export shape
    for b, s in [(1, 17), (3, 41)]:
        x = io.example_inputs(b, s, seed=1)
        with torch.no_grad():
            ref = model(**{k: torch.from_numpy(v) for k, v in x.items()}).logits.numpy()
        np.testing.assert_allclose(infer(x), ref, atol=1e-4)


def test_head_choice_is_global_and_respects_the_per_layer_minimum():
    # setup: layer 0's heads all matter little, layer 1 has one dominant head
    scores = [torch.tensor([1.0, 1.0, 1.0, 1.0]), torch.tensor([10.0, 0.1, 0.1, 0.1])]
    # execute
    removed = choose_heads(scores, n_remove=5, min_per_layer=1)
    # assert: layer 1's weak heads go first (normalised), then layer 0 down to its minimum
    assert removed[1] == [1, 2, 3]
    assert len(removed[0]) == 2
    assert choose_heads(scores, n_remove=8, min_per_layer=1) == [[0, 1, 2], [1, 2, 3]]


def test_pruning_twice_keeps_original_head_ids(tiny_vocab_bert, minilm_tokenizer, small_splits, tmp_path):
    # setup
    from transformers import AutoModelForSequenceClassification
    ctx = StageContext(small_splits, 64)
    cfg = StructuredPruneCfg(heads_fraction=0.25, importance="magnitude")
    model = prune_structured(tiny_vocab_bert, minilm_tokenizer, cfg, ctx).model
    # execute
    model = prune_structured(model, minilm_tokenizer, cfg, ctx).model
    model.save_pretrained(str(tmp_path))
    reloaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path), local_files_only=True).eval()
    # assert
    x = _inputs(minilm_tokenizer, ["fine"])
    assert sum(heads_per_layer(model)) == 8 - 2 - 2
    torch.testing.assert_close(_logits(reloaded, x), _logits(model, x), atol=1e-5, rtol=0)
