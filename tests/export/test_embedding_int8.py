"""The 8-bit word-embedding table the .pte exporter lowers (export/quant/embedding.py), in torch: no lowering here.

The files themselves (.pte/.ptl carry it by default, embeddings: false keeps fp32, the runtimes run it) are
tested in test_exporters.py, where the exports are shared.
"""
from __future__ import annotations

import copy

import torch

from edgecompress.export.quant.embedding import GRID, OPS, quantized_embedding, quantize_word_embeddings

QMIN, QMAX = GRID[8]


def test_rows_round_trip_within_half_a_step_and_zero_stays_zero():
    # setup
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 16)
    with torch.no_grad():
        emb.weight[3] = 0.0              # a padding-like row
        emb.weight[4] = emb.weight[4].abs() + 1.0  # a row that never reaches 0: the grid still holds 0
    # execute
    q = quantized_embedding(emb, 8)
    deq = (q.weight.float() - q.zero_points[:, None]) * q.scales[:, None]
    out = q(torch.arange(50).view(2, 25))
    # assert
    assert q.weight.dtype == torch.int8 and int(q.weight.min()) >= QMIN and int(q.weight.max()) <= QMAX
    assert torch.all((deq - emb.weight).abs() <= q.scales[:, None] / 2 + 1e-6)
    assert torch.equal(out[0, 3], torch.zeros(16))
    assert torch.allclose(out.view(50, 16), deq, atol=1e-6)  # the op computes what the rows store


def test_only_the_word_table_is_swapped_and_logits_stay_close(tiny_bert):
    # setup
    model = copy.deepcopy(tiny_bert)
    ids = torch.randint(1000, 1100, (3, 17))
    mask = torch.ones_like(ids)
    # execute
    info = quantize_word_embeddings(model)
    with torch.no_grad():
        ref = tiny_bert(input_ids=ids, attention_mask=mask).logits
        out = model(input_ids=ids, attention_mask=mask).logits
    # assert
    assert info == {"rows": 1100, "dim": 32, "bits": 8, "group_size": 32, "op": OPS[8], "stored_bytes": 1100 * 40,
                    "scheme": "per-row asymmetric (float scale + zero point)"}
    assert isinstance(model.bert.embeddings.position_embeddings, torch.nn.Embedding)  # fp32 still
    assert model.get_input_embeddings().weight.dtype == torch.int8
    assert tiny_bert.get_input_embeddings().weight.dtype == torch.float32  # the deep copy was swapped, not this
    assert torch.allclose(ref, out, atol=5e-3), (ref - out).abs().max()


def test_the_table_is_exportable_with_a_dynamic_sequence(tiny_bert):
    # setup: what the .pte exporter hands to torch.export
    from edgecompress.export.base import logits_module
    model = copy.deepcopy(tiny_bert)
    quantize_word_embeddings(model)
    seq = torch.export.Dim("seq", min=1, max=64)
    ids = torch.randint(1000, 1100, (1, 17))
    # execute
    ep = torch.export.export(logits_module(model), (ids, torch.ones_like(ids)),
                             dynamic_shapes={"input_ids": {1: seq}, "attention_mask": {1: seq}})
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    # assert
    assert "quantized_decomposed.embedding_byte.default" in targets
    longer = torch.randint(1000, 1100, (1, 40))
    with torch.no_grad():
        got = ep.module()(longer, torch.ones_like(longer))
        want = model(input_ids=longer, attention_mask=torch.ones_like(longer)).logits
    assert torch.allclose(got, want, atol=1e-5)


def test_buffers_have_the_dtypes_the_kernel_checks():
    # setup: ExecuTorch's embedding_byte takes int8/uint8 rows, float scales, zero points of the scales' dtype
    # execute
    q = quantized_embedding(torch.nn.Embedding(10, 8), 8)
    # assert
    assert q.weight.dtype == torch.int8 and tuple(q.weight.shape) == (10, 8)
    assert q.scales.dtype == q.zero_points.dtype == torch.float32
    assert q.scales.shape == q.zero_points.shape == (10,)
