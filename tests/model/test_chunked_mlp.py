"""Decoder MLPs run over the sequence in pieces when no gradient is recorded (hf_causal_lm's
mlp_chunk_positions, plugins/llms/hf_causal_lm.py chunk_mlps): same output, smaller transient."""

from __future__ import annotations

import copy

import torch

from lrc.registry import LLMS

CONFIG = {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 96, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2}


def tiny_llm(chunk: int | None) -> torch.nn.Module:
    torch.manual_seed(0)
    return LLMS.get("hf_causal_lm")(vocab_size=97, config=CONFIG, mlp_chunk_positions=chunk).eval()


def piece_lengths(llm: torch.nn.Module) -> list[int]:
    """Records the sequence length of every call of a decoder MLP's gate projection."""
    seen: list[int] = []
    for layer in llm.model.get_decoder().layers:
        layer.mlp.gate_proj.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[-2]))
    return seen


def test_pieces_give_the_whole_sequence_output():
    chunked, whole = tiny_llm(3), tiny_llm(None)
    ids = torch.randint(0, 97, (2, 10))
    seen = piece_lengths(chunked)
    with torch.inference_mode():
        a = chunked(inputs_embeds=chunked.embed(ids)).logits
        b = whole(inputs_embeds=whole.embed(ids)).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert seen == [3, 3, 3, 1] * 2  # both layers, 10 positions in pieces of 3


def test_training_runs_the_mlp_whole_and_gradients_match():
    """With gradients the pieces would all be kept for the backward pass: no chunking, same gradients."""
    chunked, whole = tiny_llm(3), tiny_llm(None)
    ids = torch.randint(0, 97, (1, 10))
    seen = piece_lengths(chunked)
    for llm in (chunked, whole):
        llm.train()
        llm(inputs_embeds=llm.embed(ids)).logits.square().mean().backward()
    assert seen == [10, 10]
    for (name, p), q in zip(chunked.named_parameters(), whole.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_checkpoint_keys_stay_and_a_deep_copy_runs_its_own_weights():
    chunked, whole = tiny_llm(4), tiny_llm(None)
    assert list(chunked.state_dict()) == list(whole.state_dict())
    twin = copy.deepcopy(chunked)
    with torch.no_grad():
        for layer in twin.model.get_decoder().layers:
            layer.mlp.down_proj.weight.zero_()  # the copy's MLPs now add nothing
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        mine, its = chunked(inputs_embeds=chunked.embed(ids)).logits, twin(inputs_embeds=twin.embed(ids)).logits
    assert not torch.allclose(mine, its)  # the copy's bound forward uses the copy's (zeroed) MLP
