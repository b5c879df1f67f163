"""Attention within the samples of a packed row, with no N × N mask (lrc/model/varlen_attention.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lrc.model.varlen_attention import VARLEN_SDPA, sample_bounds, varlen_sdpa_forward
from lrc.registry import LLMS


def tiny_llm(**config) -> torch.nn.Module:
    torch.manual_seed(0)
    return LLMS.get("hf_causal_lm")(vocab_size=97, config={
        "model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, **config}).train()


def test_sample_bounds_follow_position_restarts():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    assert sample_bounds(pos) == [(0, 3), (3, 5), (5, 9)]
    assert sample_bounds(torch.arange(4)[None]) == [(0, 4)]


def test_a_packed_row_computes_what_each_sample_computes_alone(monkeypatch):
    """Logits and every gradient of a packed row of three samples equal the three samples run one by one;
    and transformers never builds the row's dense mask (its SDPA mask function is not called)."""
    llm = tiny_llm()
    lengths = [5, 9, 3]
    torch.manual_seed(1)
    ids = [torch.randint(0, 97, (n,)) for n in lengths]

    alone_logits, alone_grads = [], []
    for x in ids:
        llm.zero_grad()
        out = llm(inputs_embeds=llm.embed(x[None]))
        out.logits.sum().backward()
        alone_logits.append(out.logits[0].detach())
        alone_grads.append({n: p.grad.clone() for n, p in llm.named_parameters()})

    import transformers.masking_utils as masking

    def no_dense_mask(*args, **kwargs):
        raise AssertionError("the packed forward built a dense mask")

    monkeypatch.setitem(masking.ALL_MASK_ATTENTION_FUNCTIONS._global_mapping, "sdpa", no_dense_mask)
    llm.zero_grad()
    row = torch.cat(ids)[None]
    pos = torch.cat([torch.arange(n) for n in lengths])[None]
    out = llm(inputs_embeds=llm.embed(row), position_ids=pos)
    out.logits.sum().backward()
    torch.testing.assert_close(out.logits[0].detach(), torch.cat(alone_logits), rtol=1e-5, atol=1e-5)
    for name, p in llm.named_parameters():
        torch.testing.assert_close(p.grad, sum(g[name] for g in alone_grads), rtol=1e-4, atol=1e-5, msg=name)
    assert llm.model.config._attn_implementation == "sdpa"  # switched for the packed forward only


def test_sliding_window_layers_keep_their_window_inside_each_sample():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 10, 8), torch.randn(1, 2, 10, 8), torch.randn(1, 2, 10, 8)
    pos = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1, 2, 3]])
    module = torch.nn.Module().eval()
    got, _ = varlen_sdpa_forward(module, q, k, v, None, sliding_window=3, position_ids=pos)
    want = []
    for s, e in [(0, 6), (6, 10)]:
        i = torch.arange(e - s)
        allowed = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < 3)
        want.append(F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], attn_mask=allowed))
    torch.testing.assert_close(got, torch.cat(want, dim=2).transpose(1, 2))


def test_refuses_a_masked_or_batched_call():
    q = torch.randn(2, 2, 4, 8)
    with pytest.raises(ValueError, match=VARLEN_SDPA):
        varlen_sdpa_forward(torch.nn.Module(), q, q, q, None, position_ids=torch.arange(4)[None])
    with pytest.raises(ValueError, match="packed row"):
        varlen_sdpa_forward(torch.nn.Module(), q[:1], q[:1], q[:1], torch.ones(1, 1, 4, 4, dtype=torch.bool),
                            position_ids=torch.arange(4)[None])
