"""What keyframe_delta promises beyond lrc's compressor contract (tests/plugins/test_contracts.py in lrc
covers the contract itself for every registered compressor, this one included once it is installed)."""

import pytest
import torch

from lrc_example_compressor import KeyframeDeltaCompressor


def make(**kwargs):
    args = dict(in_dim=8, frame_tokens=16, clip_len=4, tokens_per_frame=4, mark_positions=False)
    return KeyframeDeltaCompressor(**{**args, **kwargs})


def test_keyframe_is_pooled_on_its_grid():
    comp = make()
    x = torch.randn(1, 4, 16, 8)
    grid = x[0, 0].reshape(4, 4, 8)  # 4x4 tokens -> 2x2 cells of 2x2 tokens
    cells = grid.reshape(2, 2, 2, 2, 8).permute(0, 2, 1, 3, 4).reshape(4, 4, 8).mean(dim=1)
    assert torch.allclose(comp(x)[0, :4], cells, atol=1e-6)


def test_later_frames_keep_the_most_changed_tokens_in_spatial_order():
    comp = make(tokens_per_frame=2)
    x = torch.zeros(1, 4, 16, 8)
    x[0, 1, 9] = 5.0   # frame 2: token 9 moved most, then token 3
    x[0, 1, 3] = 1.0
    x[0, 2, 0] = -2.0  # frame 3: only token 0 moved; the tie among the rest goes to the earliest (1)
    x[0, 3] = x[0, 0]  # frame 4: static, ties everywhere -> tokens 0 and 1
    out = comp(x).reshape(4, 2, 8)
    assert torch.equal(out[1], x[0, 1, [3, 9]])
    assert torch.equal(out[2], x[0, 2, [0, 1]])
    assert torch.equal(out[3], x[0, 3, [0, 1]])


def test_residual_emits_the_difference_from_the_keyframe():
    x = torch.randn(1, 4, 16, 8)
    x[0, 1:] = x[0, 0]
    x[0, 2, 5] += 3.0  # frame 3: token 5 moved; on the ties the earliest position (0) is kept too
    tokens, residual = make(tokens_per_frame=2)(x), make(tokens_per_frame=2, emit="residual")(x)
    assert torch.equal(tokens[0, :2], residual[0, :2])  # the keyframe is pooled alike
    assert torch.equal(tokens[0, 4:6], x[0, 2, [0, 5]])
    assert torch.allclose(residual[0, 4:6], torch.stack([torch.zeros(8), torch.full((8,), 3.0)]))


def test_position_embedding_starts_at_zero_and_learns():
    comp = make(mark_positions=True)
    x = torch.randn(1, 4, 16, 8)
    assert torch.equal(comp(x), make()(x))  # zero at init: exactly the selected tokens
    comp(x).sum().backward()
    assert comp.position.weight.grad.abs().sum() > 0
    assert make(clip_len=1, mark_positions=True).position is None  # no later frames, nothing to mark


def test_bad_arguments_say_which_key_and_what_to_do():
    assert KeyframeDeltaCompressor.check_args(dict(emit="diff", clip_len=0)) == [
        ("clip_len", "must be at least 1, got 0"), ("emit", "'diff' is not one of token, residual")]
    with pytest.raises(ValueError, match="tokens_per_frame: 32 is more than the 16 tokens"):
        make(tokens_per_frame=32)
    with pytest.raises(ValueError, match="built for 16 of dim 8"):
        make()(torch.randn(1, 4, 9, 8))
