"""The shared input checks of lrc/protocols.py: one message per problem, whichever plugin calls them."""

import pytest
import torch

from lrc.protocols import HeadBatch, check_clip_tokens, check_head_batch


@pytest.mark.parametrize("tokens,frame_tokens,message", [
    (torch.zeros(4, 16, 8), None, "tome: expected tokens [B, T, M, D], got shape (4, 16, 8)"),
    (torch.zeros(1, 4, 16, 6), None, "tome: token dim 6 does not match in_dim 8 given at build time"),
    (torch.zeros(1, 4, 9, 8), 16, "tome: got 9 tokens per frame, but frame_tokens=16 was given at build time; "
                                  "the encoder and compressor disagree"),
    (torch.zeros(1, 4, 16, 8, dtype=torch.long), None, "tome: tokens must be floating point, got torch.int64"),
    (torch.zeros(1, 6, 16, 8), None, "tome: got T=6 frames, which is not a multiple of clip_len=4. Sample a "
                                     "multiple of 4 frames (the sampler's num_frames), or change clip_len."),
])
def test_check_clip_tokens_says_what_is_wrong(tokens, frame_tokens, message):
    with pytest.raises(ValueError) as err:
        check_clip_tokens("tome", tokens, in_dim=8, clip_len=4, frame_tokens=frame_tokens)
    assert str(err.value) == message


def test_check_clip_tokens_returns_the_shape():
    assert check_clip_tokens("tome", torch.zeros(2, 8, 16, 8), 8, 4, frame_tokens=16) == (2, 8, 16, 8)


def _batch(hidden, frames=2):
    return HeadBatch(task_hidden=hidden, query_hidden=[], frame_features=[], frames=[torch.zeros(1)] * frames,
                     timestamps=[], durations=torch.ones(hidden.shape[0] if hidden.ndim else 0))


@pytest.mark.parametrize("hidden,frames,message", [
    (torch.zeros(2, 5), 2, "cgdetr: task_hidden must be [N, 4] (hidden_size given at build time), got (2, 5)"),
    (torch.zeros(4), 2, "cgdetr: task_hidden must be [N, 4] (hidden_size given at build time), got (4,)"),
    (torch.zeros(0, 4), 0, "cgdetr: empty HeadBatch; the model calls a head only for samples with its task"),
    (torch.zeros(2, 4), 3, "cgdetr: HeadBatch.frames has 3 entries for 2 samples"),
])
def test_check_head_batch_says_what_is_wrong(hidden, frames, message):
    with pytest.raises(ValueError) as err:
        check_head_batch("cgdetr", _batch(hidden, frames), hidden_size=4, fields=("frames",))
    assert str(err.value) == message


def test_check_head_batch_returns_the_sample_count():
    assert check_head_batch("cgdetr", _batch(torch.zeros(2, 4)), 4, ("frames",)) == 2
