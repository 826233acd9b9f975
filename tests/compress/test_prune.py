import pytest
import torch

from edgecompress.compress.base import StageContext
from edgecompress.compress.prune import encoder_linears, prune, sparsity
from edgecompress.recipe import PruneCfg


@pytest.mark.parametrize("scope", ["global", "per_layer"])
def test_magnitude_pruning_reaches_the_exact_sparsity_and_is_permanent(tiny_vocab_bert, minilm_tokenizer, small_splits, scope):
    # setup
    ctx = StageContext(small_splits, 64)
    before = {n: m.weight.detach().clone() for n, m in encoder_linears(tiny_vocab_bert)}
    # execute
    res = prune(tiny_vocab_bert, minilm_tokenizer, PruneCfg(sparsity=0.4, scope=scope), ctx)
    model = res.model
    # assert: exact up to rounding of each tensor's count; masks baked in (no hooks, no weight_orig)
    assert sparsity(model) == pytest.approx(0.4, abs=2e-3)
    assert not any("weight_orig" in k or "weight_mask" in k for k in model.state_dict())
    for n, m in encoder_linears(model):
        kept = m.weight != 0
        assert torch.equal(m.weight[kept], before[n][kept])  # survivors unchanged
        if scope == "per_layer":
            assert (~kept).float().mean().item() == pytest.approx(0.4, abs=0.02)
    assert res.metrics["sparsity"] == pytest.approx(0.4, abs=2e-3)


def test_global_pruning_removes_the_smallest_magnitudes(tiny_vocab_bert, minilm_tokenizer, small_splits):
    # setup
    ws = torch.cat([m.weight.detach().abs().flatten() for _, m in encoder_linears(tiny_vocab_bert)])
    threshold = ws.kthvalue(int(0.25 * ws.numel())).values
    # execute
    model = prune(tiny_vocab_bert, minilm_tokenizer, PruneCfg(sparsity=0.25), StageContext(small_splits, 64)).model
    # assert: every surviving weight is at least the threshold
    survivors = torch.cat([m.weight.detach().abs().flatten() for _, m in encoder_linears(model)])
    assert survivors[survivors != 0].min() >= threshold
