"""ToMe clip-level merge (HiCo level 1): schedule, exact counts, hand-checked values, order, grads."""

from __future__ import annotations

import pytest
import torch

from lrc.registry import COMPRESSORS
from lrc.train.build import instantiate
from lrc_plugins.compressors.tome import ToMeCompressor, merge_schedule


# -- a deliberately naive re-statement of the released merge, one token at a time -------------------------
def naive_merge(tokens: torch.Tensor, target: int, head_dim: int) -> tuple[torch.Tensor, list[int]]:
    """One clip ``[p, D]`` → ``([target, D]`` in reference order, smallest original index per token)``."""
    values = [v.double() for v in tokens]
    sizes = [1.0] * len(values)
    origins = list(range(len(values)))
    for r in merge_schedule(len(values), target):
        def unit(v):
            m = v.reshape(-1, head_dim).mean(0)
            return m / m.norm()
        a, b = list(range(0, len(values), 2)), list(range(1, len(values), 2))
        best = []  # (score, position in A, partner position in B)
        for ia, i in enumerate(a):
            sims = [float(unit(values[i]) @ unit(values[j])) for j in b]
            jb = max(range(len(b)), key=lambda k: (sims[k], -k))  # first maximum
            best.append((sims[jb], ia, jb))
        best.sort(key=lambda e: (-e[0], e[1]))  # descending score, earlier A first on ties
        merged, kept = best[:r], best[r:]
        b_vals = [values[j] * sizes[j] for j in b]
        b_sizes = [sizes[j] for j in b]
        b_orig = [origins[j] for j in b]
        for _, ia, jb in merged:
            i = a[ia]
            b_vals[jb] = b_vals[jb] + values[i] * sizes[i]
            b_sizes[jb] += sizes[i]
            b_orig[jb] = min(b_orig[jb], origins[i])
        new_vals = [values[a[ia]] for _, ia, _ in kept] + [v / s for v, s in zip(b_vals, b_sizes)]
        new_sizes = [sizes[a[ia]] for _, ia, _ in kept] + b_sizes
        new_orig = [origins[a[ia]] for _, ia, _ in kept] + b_orig
        values, sizes, origins = new_vals, new_sizes, new_orig
    return torch.stack(values), origins


# -- schedule -------------------------------------------------------------------------------------
def test_merge_schedule_examples():
    assert merge_schedule(784, 64) == [392, 196, 98, 34]
    assert merge_schedule(1024, 64) == [512, 256, 128, 64]
    assert merge_schedule(64, 64) == []
    assert merge_schedule(4, 1) == [2, 1]


@pytest.mark.parametrize("target", [1, 2, 3, 7, 16, 64, 100])
@pytest.mark.parametrize("num_tokens", [1, 2, 3, 5, 64, 65, 100, 127, 784, 1024, 4096])
def test_merge_schedule_always_ends_at_target(num_tokens, target):
    if num_tokens < target:
        with pytest.raises(ValueError):
            merge_schedule(num_tokens, target)
        return
    p = num_tokens
    for r in merge_schedule(num_tokens, target):
        assert 1 <= r <= p // 2  # a bipartite step can remove at most half
        p -= r
    assert p == target


# -- shapes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "b, t, m, clip_len, k, d",
    [
        (1, 4, 256, 4, 16, 4096),  # released InternVideo2.5: 4 × 256 → 64 tokens at dim 4096
        (2, 8, 196, 4, 16, 64),  # 784 → 64 per clip, two clips
        (3, 2, 9, 1, 4, 8),  # odd token count per clip
        (1, 6, 7, 3, 5, 16),
        (2, 3, 5, 1, 1, 4),  # down to one token per frame
        (1, 8, 16, 8, 16, 32),  # paper text: 8-frame clip → 128 tokens
    ],
)
def test_exact_output_count(b, t, m, clip_len, k, d):
    comp = ToMeCompressor(in_dim=d, clip_len=clip_len, tokens_per_frame=k, head_dim=min(64, d))
    out = comp(torch.randn(b, t, m, d))
    assert out.shape == (b, t * k, d)
    assert comp.out_dim == d and comp.tokens_per_frame == k and comp.clip_len == clip_len


def test_pass_through_when_counts_match():
    x = torch.randn(2, 4, 16, 8)
    out = ToMeCompressor(in_dim=8, clip_len=2, tokens_per_frame=16, head_dim=8)(x)
    assert torch.equal(out, x.reshape(2, 64, 8))


def test_no_parameters_and_registered():
    assert list(ToMeCompressor(in_dim=64).parameters()) == []
    assert COMPRESSORS.get("tome") is ToMeCompressor


# -- values checked by hand -----------------------------------------------------------------------
# One clip, one frame, four 2-dim tokens (head_dim = in_dim = 2, so the metric is the token itself).
# A = {x0, x2} (even), B = {x1, x3} (odd).
X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.2]], dtype=torch.float64)
# cosines: x0·x1 = 0, x0·x3 = 1/√1.04 ≈ 0.981  → x0's best is x3 (0.981)
#          x2·x1 = 1/√2 ≈ 0.707, x2·x3 = 1.2/(√2·√1.04) ≈ 0.832 → x2's best is x3 (0.832)


def _one_frame(tokens_per_frame: int, restore_order: bool) -> ToMeCompressor:
    return ToMeCompressor(in_dim=2, clip_len=1, tokens_per_frame=tokens_per_frame, head_dim=2,
                          restore_order=restore_order)


def test_hand_case_target_3():
    # r = 1: only x0 (highest best-score) merges, into x3: (x0 + x3) / 2 = (1, 0.1).
    ref = _one_frame(3, restore_order=False)(X[None, None])[0]
    # reference order: [unmerged A (x2), then B (x1, merged x3)]
    assert torch.allclose(ref, torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 0.1]], dtype=torch.float64))
    restored = _one_frame(3, restore_order=True)(X[None, None])[0]
    # smallest original index: merged x3 ← {0, 3} → 0, x1 → 1, x2 → 2
    assert torch.allclose(restored, torch.tensor([[1.0, 0.1], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64))


def test_hand_case_target_2():
    # r = 2: both A tokens merge into x3: (x0 + x2 + x3) / 3 = (1, 0.4).
    ref = _one_frame(2, restore_order=False)(X[None, None])[0]
    assert torch.allclose(ref, torch.tensor([[0.0, 1.0], [1.0, 0.4]], dtype=torch.float64))
    restored = _one_frame(2, restore_order=True)(X[None, None])[0]
    assert torch.allclose(restored, torch.tensor([[1.0, 0.4], [0.0, 1.0]], dtype=torch.float64))


def test_size_weighting_across_two_steps():
    # Schedule 4 → 1 is [2, 1].
    # Step 1: both A (x0, x2) pick x3 → x3' = (x0 + x2 + x3) / 3 = (1, 0.4), size 3; x1 keeps size 1.
    #         Sequence is now [x1, x3'] (B only).
    # Step 2: A = {x1}, B = {x3'}: x1 merges into x3' with weights 1 and 3:
    #         (1·(0, 1) + 3·(1, 0.4)) / 4 = (0.75, 0.55)  — the mean of all four inputs —
    #         whereas an unweighted average of the two would give (0.5, 0.7).
    out = _one_frame(1, restore_order=False)(X[None, None])[0]
    assert torch.allclose(out, torch.tensor([[0.75, 0.55]], dtype=torch.float64))
    assert torch.allclose(out[0], X.mean(0))


def test_gradients_flow_through_merged_values():
    x = X.clone()[None, None].requires_grad_(True)
    out = _one_frame(1, restore_order=True)(x)
    out.sum().backward()
    # the single output is the mean of the four inputs, so each input gets 1/4
    assert torch.allclose(x.grad, torch.full_like(x, 0.25))

    x = torch.randn(2, 4, 8, 16, requires_grad=True)
    out = ToMeCompressor(in_dim=16, clip_len=2, tokens_per_frame=3, head_dim=8)(x)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and (x.grad != 0).any()
    # every input token ends up in exactly one output token: the gradient w.r.t. sum(out) is
    # 1/size of its group per feature, and the groups of one clip add back to the clip's output count
    x.grad = None
    out = ToMeCompressor(in_dim=16, clip_len=2, tokens_per_frame=3, head_dim=8)(x)
    out.sum().backward()
    per_clip = x.grad.reshape(2, 2, 16, 16)[..., 0].sum(-1)
    assert torch.allclose(per_clip, torch.full_like(per_clip, 2 * 3))


# -- order ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("p, target, head_dim", [(16, 5, 4), (7, 3, 8), (32, 12, 2), (9, 1, 8), (24, 8, 8)])
def test_matches_naive_reference(p, target, head_dim):
    torch.manual_seed(p * 100 + target)
    x = torch.randn(3, p, 8, dtype=torch.float64)
    # one frame per clip with M = p tokens, so each batch item is one clip
    ref_comp = ToMeCompressor(in_dim=8, clip_len=1, tokens_per_frame=target, head_dim=head_dim, restore_order=False)
    res_comp = ToMeCompressor(in_dim=8, clip_len=1, tokens_per_frame=target, head_dim=head_dim, restore_order=True)
    ref_out, res_out = ref_comp(x[:, None]), res_comp(x[:, None])
    for i in range(3):
        expected, origins = naive_merge(x[i], target, head_dim)
        assert torch.allclose(ref_out[i], expected, atol=1e-10)  # exactly the reference order
        order = sorted(range(target), key=lambda j: origins[j])
        assert torch.allclose(res_out[i], expected[order], atol=1e-10)  # sorted by smallest origin


def test_reference_order_is_unmerged_a_by_descending_score_then_b():
    torch.manual_seed(0)
    x = torch.randn(1, 10, 4, dtype=torch.float64)  # A = 5 tokens, B = 5 tokens; 10 → 7 removes 3
    out = ToMeCompressor(in_dim=4, clip_len=1, tokens_per_frame=7, head_dim=4, restore_order=False)(x[:, None])[0]
    a, b = x[0, ::2], x[0, 1::2]
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    best, partner = (an @ bn.T).max(-1)
    order = best.argsort(descending=True)
    # first the two A tokens that were not merged (lowest best-scores), in descending-score order
    assert torch.allclose(out[:2], a[order[3:]])
    # then all five B tokens in their original order, each the mean of itself and the A tokens it took
    for j in range(5):
        group = [b[j]] + [a[i] for i in order[:3].tolist() if partner[i] == j]
        assert torch.allclose(out[2 + j], torch.stack(group).mean(0))


def test_restore_order_follows_frames():
    # Frame f's tokens all point along axis f (plus a little noise): merges stay inside a frame, and
    # with restore_order the output token i comes from frame i // tokens_per_frame.
    torch.manual_seed(1)
    clip_len, m, k, d = 4, 8, 2, 8
    direction = torch.eye(d)[:clip_len]  # [T, D]
    x = direction[:, None, :].expand(clip_len, m, d) + 0.01 * torch.randn(clip_len, m, d)
    out = ToMeCompressor(in_dim=d, clip_len=clip_len, tokens_per_frame=k, head_dim=d)(x[None])[0]
    assert out.argmax(-1).tolist() == [i // k for i in range(clip_len * k)]


# -- determinism, batch independence, clips -------------------------------------------------------
def test_deterministic_with_ties():
    x = torch.ones(2, 4, 6, 8)  # every score ties
    comp = ToMeCompressor(in_dim=8, clip_len=2, tokens_per_frame=2, head_dim=4)
    assert torch.equal(comp(x), comp(x))
    y = torch.randn(2, 4, 6, 8)
    assert torch.equal(comp(y), comp(y.clone()))


def test_batch_independence():
    torch.manual_seed(2)
    comp = ToMeCompressor(in_dim=16, clip_len=2, tokens_per_frame=3, head_dim=8)
    x = torch.randn(3, 4, 10, 16)
    out = comp(x)
    for i in range(3):
        assert torch.allclose(out[i], comp(x[i:i + 1])[0], atol=1e-6)
    y = x.clone()
    y[0] = torch.randn(4, 10, 16)
    y[2] = 5 * torch.randn(4, 10, 16)
    assert torch.allclose(comp(y)[1], out[1], atol=1e-6)


def test_clips_are_merged_independently():
    torch.manual_seed(3)
    comp = ToMeCompressor(in_dim=8, clip_len=2, tokens_per_frame=3, head_dim=8)
    x = torch.randn(1, 6, 9, 8)
    out = comp(x)
    for c in range(3):
        assert torch.allclose(out[:, c * 6:(c + 1) * 6], comp(x[:, 2 * c:2 * c + 2]), atol=1e-6)


def test_bfloat16_in_bfloat16_out():
    torch.manual_seed(4)
    comp = ToMeCompressor(in_dim=16, clip_len=2, tokens_per_frame=2, head_dim=8, restore_order=False)
    x = torch.randn(1, 2, 12, 16)
    out = comp(x.bfloat16())
    assert out.dtype == torch.bfloat16 and out.shape == (1, 4, 16)


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(in_dim=0), "in_dim"),
        (dict(in_dim=64, clip_len=0), "clip_len"),
        (dict(in_dim=64, tokens_per_frame=-1), "tokens_per_frame"),
        (dict(in_dim=64, head_dim=0), "head_dim"),
        (dict(in_dim=64, clip_len=True), "clip_len"),
        (dict(in_dim=64, clip_len=2.0), "clip_len"),
        (dict(in_dim=100, head_dim=64), "not divisible"),
        (dict(in_dim=32, head_dim=64), "larger than in_dim"),
    ],
)
def test_constructor_errors(kwargs, message):
    # types and ranges are checked by the builder against the annotations (lrc.constraints), the rest by tome
    with pytest.raises(ValueError, match=message):
        instantiate(COMPRESSORS, {"name": "tome", **kwargs})


def test_forward_errors():
    comp = ToMeCompressor(in_dim=8, clip_len=4, tokens_per_frame=2, head_dim=8)
    with pytest.raises(ValueError, match=r"T=6.*clip_len=4.*multiple of 4"):
        comp(torch.randn(1, 6, 4, 8))
    with pytest.raises(ValueError, match="fewer than"):
        ToMeCompressor(in_dim=8, clip_len=2, tokens_per_frame=5, head_dim=8)(torch.randn(1, 2, 4, 8))
    with pytest.raises(ValueError, match="in_dim"):
        comp(torch.randn(1, 4, 4, 16))
    with pytest.raises(ValueError, match=r"\[B, T, M, D\]"):
        comp(torch.randn(4, 4, 8))


# -- precision: the merge runs in the input dtype where that is safe ------------------------------------------
def _tome(dim: int, frame_tokens: int, **kw):
    return instantiate(COMPRESSORS, {"name": "tome", **kw}, in_dim=dim, frame_tokens=frame_tokens)


@pytest.mark.parametrize("frame_tokens, tokens_per_frame", [(16, 8), (64, 40)])
def test_bfloat16_merge_matches_float32_up_to_bfloat16_rounding(frame_tokens, tokens_per_frame):
    """bf16 sums (as the released merge does them) differ from the float32 path by bf16 rounding only: the
    metric is float32 either way and the sizes are exact in bf16. Checked on one merge step (a clip of
    4 × 16 → 4 × 8, 4 × 64 → 4 × 40), where both paths must pick the same pairs; over several steps a
    rounded average can flip a near-tie in a later step's matching, on random tokens as in the reference."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, frame_tokens, 256).to(torch.bfloat16)
    tome = _tome(256, frame_tokens, clip_len=4, tokens_per_frame=tokens_per_frame, head_dim=64)
    assert len(merge_schedule(4 * frame_tokens, 4 * tokens_per_frame)) == 1
    out16, out32 = tome(x), tome(x.float())
    assert out16.dtype == torch.bfloat16 and out16.shape == out32.shape == (2, 8 * tokens_per_frame, 256)
    torch.testing.assert_close(out16.float(), out32, rtol=2 ** -7, atol=2 ** -7)


def test_float16_sums_run_in_float32_so_large_values_do_not_overflow():
    """size × value can pass float16's 65504 (16 tokens of 5000 each); the merge must stay finite and right."""
    torch.manual_seed(0)
    x = (torch.randn(1, 4, 64, 64) * 500 + 5000).to(torch.float16)
    tome = _tome(64, 64, clip_len=4, tokens_per_frame=4, head_dim=64)
    out16 = tome(x)
    assert out16.dtype == torch.float16 and torch.isfinite(out16).all()
    torch.testing.assert_close(out16.float(), tome(x.float()), rtol=2 ** -9, atol=4.0)
