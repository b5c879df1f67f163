"""The HiCo level-1 baselines (paper §3.2): pooling, Q-Former and pixel-shuffle MLP compressors.

The generic protocol (shapes, counts, batch independence, gradients, clip_len errors) is checked for
every registered compressor in test_contracts.py; these tests pin down what each of these does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lrc.train.build import instantiate
from lrc.config import PLUGIN_SLOTS, ConfigError, load_config, validate
from lrc.registry import COMPRESSORS, ENCODERS
from lrc_plugins.compressors.mlp import MLPCompressor
from lrc_plugins.compressors.pooling import PoolingCompressor, frames_per_window
from lrc_plugins.compressors.qformer import QFormerCompressor

DEMO = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "tiny.yaml"


# -- pooling ----------------------------------------------------------------------------------------
def test_pooling_avg_of_a_2x2_grid_to_one_token_is_the_mean():
    x = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [6.0, 60.0]]).reshape(1, 1, 4, 2)
    out = PoolingCompressor(in_dim=2, clip_len=1, tokens_per_frame=1)(x)
    assert torch.allclose(out, torch.tensor([[[3.0, 30.0]]]))


def test_pooling_spatial_keeps_the_grid_layout():
    # A 4×4 grid to 2×2: output token (i, j) averages the 2×2 block at rows 2i.., columns 2j.. .
    x = torch.randn(1, 1, 16, 3)
    out = PoolingCompressor(in_dim=3, clip_len=1, tokens_per_frame=4)(x)[0]
    grid = x[0, 0].reshape(4, 4, 3)
    for i in range(2):
        for j in range(2):
            block = grid[2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(4, 3)
            assert torch.allclose(out[2 * i + j], block.mean(0), atol=1e-6)


def test_pooling_max_mode_takes_the_maximum():
    x = torch.randn(2, 2, 16, 3)
    out = PoolingCompressor(in_dim=3, clip_len=1, tokens_per_frame=1, mode="max")(x)
    assert torch.equal(out, x.amax(dim=2))
    out4 = PoolingCompressor(in_dim=3, clip_len=2, tokens_per_frame=4, mode="max")(x)
    first_block = x[:, :, [0, 1, 4, 5]].amax(dim=2)  # frame f's output token 0 = max over its top-left 2×2
    assert torch.equal(out4.reshape(2, 2, 4, 3)[:, :, 0], first_block)


def test_pooling_spatial_never_mixes_frames():
    x = torch.randn(1, 4, 16, 8)
    comp = PoolingCompressor(in_dim=8, clip_len=4, tokens_per_frame=4, scope="spatial")
    y = x.clone()
    y[0, 1] += 100.0  # frame 1 only
    changed = (comp(x) != comp(y)).any(-1)[0]
    assert changed.tolist() == [j // 4 == 1 for j in range(16)]


def test_pooling_spatiotemporal_pools_across_the_frames_of_a_clip():
    # clip_len 4, 16-token frames, 1 token per frame: the whole clip (4 frames) is one window,
    # pooled to a 2×2 grid; output token 0 averages the top-left 2×2 block of all 4 frames.
    comp = PoolingCompressor(in_dim=2, clip_len=4, tokens_per_frame=1, scope="spatiotemporal")
    assert frames_per_window(4, 1, 16, "spatiotemporal") == 4
    x = torch.randn(1, 8, 16, 2)
    out = comp(x)
    assert out.shape == (1, 8, 2)
    assert torch.allclose(out[0, 0], x[0, :4][:, [0, 1, 4, 5]].mean((0, 1)), atol=1e-6)
    y = x.clone()
    y[0, 1, 0] += 100.0  # a value planted in frame 1, top-left token
    diff = (comp(y) - out).abs().sum(-1)[0]
    assert diff[0] > 0, "frame 1's token shows up in the clip's first output token (labelled frame 0)"
    assert torch.all(diff[4:] == 0), "the next clip is unaffected"


def test_pooling_spatiotemporal_sequence_path_also_pools_time():
    # 8 tokens per window is not a square, so the frames are treated as sequences: (t, m) → (1, 8).
    comp = PoolingCompressor(in_dim=3, clip_len=4, tokens_per_frame=2, scope="spatiotemporal")
    x = torch.randn(1, 4, 16, 3)
    out = comp(x)
    assert out.shape == (1, 8, 3)
    assert torch.allclose(out[0, 0], x[0, :, 0:2].mean((0, 1)), atol=1e-6)
    y = x.clone()
    y[0, 3, 0] += 100.0  # last frame of the clip
    assert (comp(y)[0, 0] != out[0, 0]).any()


def test_pooling_spatiotemporal_is_the_identity_when_nothing_is_compressed():
    x = torch.randn(2, 4, 16, 5)
    assert torch.equal(PoolingCompressor(in_dim=5, clip_len=4, tokens_per_frame=16, scope="spatiotemporal")(x),
                       x.reshape(2, 64, 5))


@pytest.mark.parametrize("scope", ["spatial", "spatiotemporal"])
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("m,k", [(16, 3), (16, 8), (10, 4), (49, 5), (64, 16)])
def test_pooling_exact_counts_for_any_tokens_per_frame(scope, mode, m, k):
    comp = PoolingCompressor(in_dim=4, clip_len=2, tokens_per_frame=k, mode=mode, scope=scope)
    assert comp(torch.randn(3, 4, m, 4)).shape == (3, 4 * k, 4)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 40), clip_len=st.integers(1, 4), clips=st.integers(1, 2), data=st.data())
def test_pooling_exact_count_property(m, clip_len, clips, data):
    k = data.draw(st.integers(1, m))
    scope = data.draw(st.sampled_from(["spatial", "spatiotemporal"]))
    comp = PoolingCompressor(in_dim=2, clip_len=clip_len, tokens_per_frame=k, scope=scope)
    assert comp(torch.randn(1, clip_len * clips, m, 2)).shape == (1, clip_len * clips * k, 2)


def test_pooling_errors_say_what_to_set():
    # choices are the annotations' Literals, checked by the builder (and by lrc validate)
    with pytest.raises(ValueError, match="'mean' is not one of avg, max"):
        instantiate(COMPRESSORS, {"name": "pooling", "in_dim": 4, "mode": "mean"})
    with pytest.raises(ValueError, match="'temporal' is not one of spatial, spatiotemporal"):
        instantiate(COMPRESSORS, {"name": "pooling", "in_dim": 4, "scope": "temporal"})
    with pytest.raises(ValueError, match="tokens_per_frame <= 4"):
        PoolingCompressor(in_dim=4, clip_len=1, tokens_per_frame=8)(torch.randn(1, 1, 4, 4))
    assert list(PoolingCompressor(in_dim=4).parameters()) == []


# -- qformer ----------------------------------------------------------------------------------------
def small_qformer(**kw) -> QFormerCompressor:
    torch.manual_seed(0)
    args = dict(in_dim=8, clip_len=4, tokens_per_frame=2, hidden_dim=16, num_layers=2, num_heads=2)
    return QFormerCompressor(**{**args, **kw}).eval()


def test_qformer_count_and_hidden_dim():
    comp = small_qformer(hidden_dim=24, num_heads=3, tokens_per_frame=3)
    out = comp(torch.randn(2, 8, 5, 8))
    assert comp.out_dim == 24
    assert out.shape == (2, 8 * 3, 24)


def test_qformer_every_parameter_gets_a_gradient():
    comp = small_qformer()
    comp(torch.randn(2, 4, 5, 8)).square().sum().backward()
    for name, p in comp.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"


def test_qformer_one_frame_changes_its_clip_only():
    comp = small_qformer()
    x = torch.randn(1, 8, 5, 8)
    y = x.clone()
    y[0, 1] = torch.randn(5, 8)  # frame 1 of clip 0
    a, b = comp(x), comp(y)
    per_clip = 4 * 2
    assert not torch.allclose(a[:, :per_clip], b[:, :per_clip])
    assert torch.equal(a[:, per_clip:], b[:, per_clip:])


def test_qformer_sees_frame_order_within_a_clip():
    # The temporal embedding makes the clip's frame order visible to the queries.
    comp = small_qformer()
    x = torch.randn(1, 4, 5, 8)
    assert not torch.allclose(comp(x), comp(x[:, [1, 0, 2, 3]]), atol=1e-5)


def test_qformer_frame_bias_prefers_the_own_frame():
    comp = small_qformer(num_layers=1)
    with torch.no_grad():
        comp.layers[0].frame_bias.fill_(50.0)  # query group f then sees (almost) only frame f
    x = torch.randn(1, 4, 5, 8)
    y = x.clone()
    y[0, 2] = torch.randn(5, 8)
    diff = (comp(x) - comp(y)).abs().sum(-1)[0]
    own = torch.arange(8) // 2 == 2
    # Self-attention among queries spreads a little to other groups; the own group moves most.
    assert diff[own].min() > 10 * diff[~own].max()


def test_qformer_errors():
    with pytest.raises(ValueError, match="num_heads"):
        QFormerCompressor(in_dim=8, hidden_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="in_dim 8"):
        small_qformer()(torch.randn(1, 4, 5, 7))


# -- mlp (pixel shuffle) ---------------------------------------------------------------------------
@pytest.mark.parametrize("r,c", [(0, 0), (0, 5), (3, 2), (7, 7), (5, 1)])
def test_mlp_pixel_shuffle_layout(r, c):
    # 8×8 grid, shuffle 0.5: the token at (r, c) only affects output token (r//2)·4 + c//2.
    torch.manual_seed(0)
    comp = MLPCompressor(in_dim=4, frame_tokens=64, clip_len=1, shuffle=0.5).eval()
    x = torch.randn(1, 2, 64, 4)
    y = x.clone()
    y[0, 1, r * 8 + c] += 5.0  # frame 1
    changed = (comp(x) != comp(y)).any(-1)[0]
    expected = torch.zeros(2 * 16, dtype=torch.bool)
    expected[16 + (r // 2) * 4 + c // 2] = True
    assert torch.equal(changed, expected)


@pytest.mark.parametrize("frame_tokens,shuffle,k", [(64, 0.5, 16), (64, 0.25, 4), (64, 1.0, 64), (1024, 0.5, 256),
                                                    (36, 1 / 3, 4)])
def test_mlp_tokens_per_frame_is_derived(frame_tokens, shuffle, k):
    comp = MLPCompressor(in_dim=4, frame_tokens=frame_tokens, shuffle=shuffle)
    assert comp.tokens_per_frame == k == round(frame_tokens * shuffle ** 2)
    assert comp(torch.randn(1, 2, frame_tokens, 4)).shape == (1, 2 * k, 4)


def test_mlp_out_dim_is_hidden_dim_or_in_dim():
    assert MLPCompressor(in_dim=4, frame_tokens=16).out_dim == 4
    comp = MLPCompressor(in_dim=4, frame_tokens=16, hidden_dim=12)
    assert comp.out_dim == 12 and comp(torch.randn(1, 1, 16, 4)).shape == (1, 4, 12)


@pytest.mark.parametrize("frame_tokens,shuffle", [(15, 0.5), (48, 0.5), (36, 0.25), (49, 0.5)])
def test_mlp_rejects_grids_that_cannot_be_shuffled(frame_tokens, shuffle):
    with pytest.raises(ValueError, match=r"frame_tokens=\d+.*shuffle"):
        MLPCompressor(in_dim=4, frame_tokens=frame_tokens, shuffle=shuffle)


def test_mlp_rejects_bad_shuffle_and_mismatched_frames():
    with pytest.raises(ValueError, match="shuffle"):
        MLPCompressor(in_dim=4, frame_tokens=16, shuffle=0.3)
    with pytest.raises(ValueError, match="shuffle"):
        MLPCompressor(in_dim=4, frame_tokens=16, shuffle=2.0)
    with pytest.raises(ValueError, match="frame_tokens=16"):
        MLPCompressor(in_dim=4, frame_tokens=16)(torch.randn(1, 1, 64, 4))


# -- built from YAML through the real config path --------------------------------------------------
@pytest.mark.parametrize("name,overrides", [
    ("pooling", ["model.compressor.mode=max", "model.compressor.scope=spatiotemporal"]),
    ("qformer", ["model.compressor.hidden_dim=32", "model.compressor.num_layers=1"]),
    ("mlp", ["model.compressor.shuffle=0.5", "model.compressor.hidden_dim=96"]),
])
def test_builds_from_the_demo_yaml(name, overrides):
    cfg = validate(load_config(DEMO, [f"model.compressor.name={name}", *overrides]))
    node = cfg["model"]["compressor"]
    assert node["name"] == name and node["clip_len"] == 4  # shared vocabulary carries over from tome
    assert "head_dim" not in node  # tome-only argument dropped
    assert ("tokens_per_frame" in node) == (name != "mlp")  # mlp derives its own: dropped, not an error
    encoder = instantiate(PLUGIN_SLOTS["model.encoder"], cfg["model"]["encoder"])
    comp = instantiate(COMPRESSORS, node, in_dim=encoder.out_dim, frame_tokens=encoder.num_tokens)
    # demo: 8×8 patches, 16 kept per frame; mlp derives its own: 64 × 0.5² = 16
    assert comp.clip_len == 4 and comp.tokens_per_frame == 16
    frames = cfg["data"]["sampler"]["num_frames"]
    out = comp.eval()(torch.randn(1, frames, encoder.num_tokens, encoder.out_dim))
    assert out.shape == (1, frames * comp.tokens_per_frame, comp.out_dim)
    assert PLUGIN_SLOTS["model.encoder"] is ENCODERS


def test_mlp_with_tokens_per_frame_set_explicitly_is_a_config_error():
    with pytest.raises(ConfigError, match="tokens_per_frame"):
        validate(load_config(DEMO, ["model.compressor.name=mlp", "model.compressor.tokens_per_frame=4"]))
