"""Ulysses sequence parallelism (lrc/sequence_parallel.py): two real gloo processes on the CPU against the
same model unsharded, plus the refusals that need no process group."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lrc.sequence_parallel import SequenceParallelError, check_right_padded, sequence_parallel_group

# 4 query heads over 2 key/value heads: GQA, split 2 + 1 per rank
TINY_QWEN2 = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128}
VOCAB = 97


def tiny_llm(sequence_parallel: int, **config):
    from lrc_plugins.llms.hf_causal_lm import HFCausalLM

    torch.manual_seed(0)
    return HFCausalLM(VOCAB, config={**TINY_QWEN2, **config}, dtype="float64", sequence_parallel=sequence_parallel)


def reference_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """lrc.model.answer_loss without its float32 cast, so float64 comparisons stay tight."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1),
                                             ignore_index=-100)


def _worker(rank: int, world: int, port: int, length: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        llm = tiny_llm(sequence_parallel=world)
        assert llm.model.config._attn_implementation == "ulysses_sdpa"
        g = torch.Generator().manual_seed(1)  # same inputs on every rank
        embeds = torch.randn(2, length, 64, generator=g, dtype=torch.float64)
        labels = torch.randint(0, VOCAB, (2, length), generator=g)
        labels[:, : length // 3] = -100  # unscored prompt, as in lrc batches
        mask = torch.ones(2, length, dtype=torch.long)
        mask[1, length - 4:] = 0  # right padding on the second row
        labels[1, length - 4:] = -100
        head_weights = torch.randn(64, generator=g, dtype=torch.float64)  # a TPO-like loss on hidden states

        # unsharded: the same weights, the plain forward (no sequence_parallel argument → inner sdpa)
        full_embeds = embeds.clone().requires_grad_()
        out = llm(inputs_embeds=full_embeds, attention_mask=mask, output_hidden_states=True)
        ref_hidden = out.hidden_states[-1]
        ref_loss = reference_loss(out.logits, labels) + (ref_hidden[:, 3] @ head_weights).sum()
        ref_loss.backward()
        # (the embedding table gets none: the forward starts from inputs_embeds, as VideoMLLM's does)
        ref_grads = {n: p.grad.clone() for n, p in llm.named_parameters() if p.grad is not None}
        assert len(ref_grads) == len(list(llm.parameters())) - 1
        ref_embed_grad = full_embeds.grad.clone()
        llm.zero_grad()

        sharded_embeds = embeds.clone().requires_grad_()
        sharded = llm.forward_sequence_parallel(sharded_embeds, mask, labels, output_hidden_states=True)
        chunk = -(-length // world)
        assert (sharded.start, sharded.stop, sharded.length) == (rank * chunk, (rank + 1) * chunk, length)
        loss = sharded.loss + (sharded.hidden[:, 3] @ head_weights).sum()
        loss.backward()

        # logits: gathered chunks, padding dropped, compared at real tokens (padded rows differ by design)
        parts = [torch.empty_like(sharded.logits) for _ in range(world)]
        dist.all_gather(parts, sharded.logits.detach().contiguous())
        logits = torch.cat(parts, dim=1)[:, :length]
        real = mask.bool()
        torch.testing.assert_close(logits[real], out.logits.detach()[real], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(sharded.hidden.detach()[real], ref_hidden.detach()[real], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(loss.detach(), ref_loss.detach(), rtol=1e-9, atol=1e-9)
        # gradients: averaged over the group, as DDP does (lrc/sequence_parallel.py module docstring)
        assert {n for n, p in llm.named_parameters() if p.grad is not None} == set(ref_grads)
        for name, param in llm.named_parameters():
            if param.grad is None:
                continue
            grad = param.grad.clone()
            dist.all_reduce(grad)
            torch.testing.assert_close(grad / world, ref_grads[name], rtol=1e-8, atol=1e-10, msg=name)
        grad = sharded_embeds.grad.clone()
        dist.all_reduce(grad)
        torch.testing.assert_close(grad / world, ref_embed_grad, rtol=1e-8, atol=1e-10)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("length", [16, 13], ids=["divisible", "padded"])
def test_two_ranks_match_the_unsharded_model(length, monkeypatch):
    """Logits, hidden states, loss and every gradient of a 2-rank Ulysses forward equal one process's."""
    # the spawned workers import this file as tests.test_sequence_parallel (pytest's importlib mode)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    mp.spawn(_worker, args=(2, _free_port(), length), nprocs=2, join=True)


def test_heads_must_split_evenly():
    with pytest.raises(SequenceParallelError, match=r"num_attention_heads \(4\) is not a multiple of 3"):
        tiny_llm(sequence_parallel=3)
    # GQA: 4 query heads split 4 ways, but 2 key/value heads do not
    with pytest.raises(SequenceParallelError, match=r"num_key_value_heads \(2\) is not a multiple of 4"):
        tiny_llm(sequence_parallel=4)


def test_refuses_what_it_cannot_shard():
    with pytest.raises(SequenceParallelError, match="eager kernel"):
        from lrc_plugins.llms.hf_causal_lm import HFCausalLM

        HFCausalLM(VOCAB, config=TINY_QWEN2, attn_implementation="eager", sequence_parallel=2)
    with pytest.raises(SequenceParallelError, match="sliding-window"):
        tiny_llm(sequence_parallel=2, use_sliding_window=True, sliding_window=8, max_window_layers=0)
    with pytest.raises(SequenceParallelError, match="right-padded"):
        check_right_padded(torch.tensor([[0, 1, 1], [1, 1, 1]]))
    check_right_padded(torch.tensor([[1, 1, 0], [1, 1, 1]]))
    with pytest.raises(SequenceParallelError, match="runs alone"):
        sequence_parallel_group(2)

