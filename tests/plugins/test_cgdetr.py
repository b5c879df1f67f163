"""CG-DETR temporal head: shapes, masking, losses, gradients, decoding, metrics and a tiny overfit."""

from __future__ import annotations

import time

import pytest
import torch

from lrc.protocols import Head, HeadBatch
from lrc.registry import HEADS
from lrc.train.build import instantiate
from lrc.model.spans import cw_to_se
from lrc_plugins.heads.cgdetr import CGDETRHead

D = 32
SMALL = dict(d_model=32, num_heads=2, num_dummy_layers=1, num_cross_layers=1, num_encoder_layers=1,
             num_decoder_layers=1, num_queries=5, num_dummies=3, ffn_dim=64)


def make_head(**overrides) -> CGDETRHead:
    torch.manual_seed(0)
    return CGDETRHead(hidden_size=D, **{**SMALL, **overrides})


def make_batch(frames=(6, 9), queries=(0, 4), durations=None, spans=None, seed=0) -> HeadBatch:
    """Frames sampled at segment midpoints of each video; one GT span per sample (seconds)."""
    g = torch.Generator().manual_seed(seed)
    durations = torch.tensor(durations or [2.0 * t for t in frames])
    spans = spans or [[[0.2 * float(d), 0.6 * float(d)]] for d in durations]
    timestamps = [(torch.arange(t) + 0.5) * float(d) / t for t, d in zip(frames, durations)]
    targets = []
    for s, ts in zip(spans, timestamps):
        s = torch.tensor(s)
        inside = ((ts[:, None] >= s[:, 0]) & (ts[:, None] <= s[:, 1])).any(1)
        targets.append({"spans": s, "saliency": inside.float()})
    return HeadBatch(
        task_hidden=torch.randn(len(frames), D, generator=g),
        query_hidden=[torch.randn(q, D, generator=g) for q in queries],
        frame_features=[torch.randn(t, D, generator=g) for t in frames],
        frames=[torch.zeros(t, 3, 2, 2) for t in frames],
        timestamps=timestamps,
        durations=durations,
        targets=targets,
        ids=[f"vid{i}" for i in range(len(frames))],
    )


def subset(batch: HeadBatch, index: list[int]) -> HeadBatch:
    return HeadBatch(
        task_hidden=batch.task_hidden[index],
        query_hidden=[batch.query_hidden[i] for i in index],
        frame_features=[batch.frame_features[i] for i in index],
        frames=[batch.frames[i] for i in index],
        timestamps=[batch.timestamps[i] for i in index],
        durations=batch.durations[index],
        targets=[batch.targets[i] for i in index],
        ids=[batch.ids[i] for i in index],
    )


def test_registered_and_follows_the_head_protocol():
    assert HEADS.get("cgdetr") is CGDETRHead
    head = make_head()
    assert isinstance(head, Head)
    assert (head.task, head.task_token, head.begin_token) == ("temporal", "<temp>", "<temp_begin>")


@pytest.mark.parametrize("frames,queries", [((6, 9, 4), (0, 4, 2)), ((5,), (0,)), ((3, 3), (0, 0))])
def test_forward_shapes_with_variable_frames_and_query_lengths(frames, queries):
    head = make_head().eval()
    batch = make_batch(frames, queries)
    out = head(batch)
    n, t = len(frames), max(frames)
    assert out["spans"].shape == (n, 5, 2) and out["logits"].shape == (n, 5, 2)
    assert out["saliency"].shape == (n, t) and out["query_attention"].shape == (n, t)
    assert out["frame_mask"].dtype == torch.bool
    assert out["frame_mask"].sum(1).tolist() == list(frames)
    assert ((out["spans"] >= 0) & (out["spans"] <= 1)).all(), "spans are sigmoid-normalised (centre, width)"
    assert (out["saliency"][~out["frame_mask"]] == 0).all()
    mass = out["query_attention"][out["frame_mask"]]
    assert ((mass > 0) & (mass < 1)).all(), "each frame splits its attention between dummies and the query"
    for value in out.values():
        assert torch.isfinite(value.float()).all()


def test_initial_spans_are_the_anchors():
    head = make_head().eval()
    out = head(make_batch())
    assert torch.allclose(out["spans"], head.anchors.sigmoid().expand_as(out["spans"]), atol=1e-6)
    centres = out["spans"][0, :, 0]
    assert torch.allclose(centres, (torch.arange(5) + 0.5) / 5, atol=1e-5), "anchors tile the timeline"


def test_padding_invariance_in_eval():
    head = make_head().eval()
    batch = make_batch(frames=(5, 11, 7), queries=(0, 6, 3), seed=1)
    together = head(batch)
    for i, t in enumerate((5, 11, 7)):
        alone = head(subset(batch, [i]))
        for key in ("spans", "logits"):
            assert torch.allclose(together[key][i], alone[key][0], atol=1e-5), key
        for key in ("saliency", "query_attention"):
            assert torch.allclose(together[key][i, :t], alone[key][0, :t], atol=1e-5), key


def test_loss_terms_are_finite_and_gradients_reach_the_llm_states():
    head = make_head().train()
    batch = make_batch(frames=(6, 9, 4), queries=(0, 4, 2))
    batch.task_hidden.requires_grad_(True)
    for f in batch.frame_features + batch.query_hidden:
        f.requires_grad_(True)
    losses = head.loss(head(batch), batch)
    assert set(losses) == {"loss", "loss_span", "loss_giou", "loss_label", "loss_saliency"}
    for value in losses.values():
        assert value.ndim == 0 and torch.isfinite(value)
    weighted = (10 * losses["loss_span"] + 1 * losses["loss_giou"] + 4 * losses["loss_label"]
                + 4 * losses["loss_saliency"])
    assert torch.allclose(losses["loss"], weighted)
    losses["loss"].backward()
    assert batch.task_hidden.grad is not None and batch.task_hidden.grad.abs().sum() > 0
    for f in batch.frame_features:
        assert f.grad is not None and f.grad.abs().sum() > 0
    assert batch.query_hidden[1].grad.abs().sum() > 0
    unused = [name for name, p in head.named_parameters() if p.grad is None]
    assert not unused, f"parameters without gradient: {unused}"


def test_bf16_llm_states_and_a_bf16_head():
    """LLM hidden states arrive in bf16; the head casts them to its own dtype, losses run in float32."""
    head = make_head()
    batch = make_batch(frames=(6, 9), queries=(0, 3))
    batch.task_hidden = batch.task_hidden.bfloat16()
    batch.frame_features = [f.bfloat16() for f in batch.frame_features]
    batch.query_hidden = [q.bfloat16() for q in batch.query_hidden]
    for module in (head, head.to(torch.bfloat16)):
        losses = module.loss(module(batch), batch)
        assert losses["loss"].dtype == torch.float32 and torch.isfinite(losses["loss"])
        losses["loss"].backward()
        assert module.decode(module(batch), batch)[1]["spans"][0][1] <= 18.0


def test_loss_values_by_hand_for_a_perfect_match():
    """Predictions set to the GT: span L1 = 0 and GIoU loss = 0 for the matched query."""
    head = make_head(num_queries=2)
    batch = make_batch(frames=(10,), queries=(2,), durations=[20.0], spans=[[[4.0, 12.0]]])
    spans = torch.tensor([[[0.4, 0.4], [0.9, 0.1]]])  # (centre, width) of [4, 12]/20, and a decoy
    logits = torch.tensor([[[5.0, -5.0], [-5.0, 5.0]]])  # query 0 foreground, query 1 no object
    frame_mask = torch.ones(1, 10, dtype=torch.bool)
    saliency = batch.targets[0]["saliency"] * 2.0  # in-span 2, out-of-span 0: margin 0.2 satisfied
    losses = head.loss({"spans": spans, "logits": logits, "saliency": saliency[None], "frame_mask": frame_mask}, batch)
    assert losses["loss_span"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_saliency"].item() == pytest.approx(0.0, abs=1e-6)
    # Both queries are classified right with the same confidence; the no-object one counts eos_weight
    # (0.1), and the mean runs over the 2 queries: (1 + 0.1) / 2 · CE.
    ce = torch.nn.functional.cross_entropy(torch.tensor([5.0, -5.0])[None], torch.tensor([0]))
    assert losses["loss_label"].item() == pytest.approx(0.55 * ce.item(), rel=1e-4)

    # Swapping the queries' spans makes the matcher pick query 1 (cost is span-driven): then query 1
    # must be foreground and query 0 no object, so the label loss becomes large.
    swapped = head.loss({"spans": spans.flip(1), "logits": logits, "saliency": saliency[None],
                         "frame_mask": frame_mask}, batch)
    assert swapped["loss_span"].item() == pytest.approx(0.0, abs=1e-6)
    assert swapped["loss_label"] > 1.0


def test_saliency_loss_is_zero_without_negatives_and_ranks_otherwise():
    head = make_head()
    batch = make_batch(frames=(4, 4), queries=(1, 1), durations=[4.0, 4.0], spans=[[[0.0, 4.0]], [[0.0, 1.0]]])
    assert batch.targets[0]["saliency"].tolist() == [1, 1, 1, 1]  # no out-of-span frame: nothing to rank
    preds = {"spans": torch.full((2, 5, 2), 0.5), "logits": torch.zeros(2, 5, 2),
             "saliency": torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.3, 0.0, 0.1]]),
             "frame_mask": torch.ones(2, 4, dtype=torch.bool)}
    # sample 1: positive frame 0 (score 0) vs negatives 0.3, 0.0, 0.1 → relu(0.2 − (0 − s)) = 0.5, 0.2, 0.3
    expected = (0.0 + (0.5 + 0.2 + 0.3) / 3) / 2
    assert head.loss(preds, batch)["loss_saliency"].item() == pytest.approx(expected)


def test_loss_with_no_gt_span_is_finite():
    head = make_head()
    batch = make_batch(frames=(6,), queries=(2,))
    batch.targets[0]["spans"] = torch.zeros(0, 2)
    losses = head.loss(head(batch), batch)
    assert losses["loss_span"].item() == 0.0 and torch.isfinite(losses["loss"])


def test_decode_in_seconds_clipped_and_sorted():
    head = make_head().eval()
    batch = make_batch(frames=(6, 9), queries=(0, 3), durations=[12.0, 30.0])
    preds = head(batch)
    # Force spans that leave the video on both sides: centre 0.05 width 0.5 → [-0.2, 0.3]; 0.9 / 0.6 → [0.6, 1.2].
    preds["spans"][:, 0] = torch.tensor([0.05, 0.5])
    preds["spans"][:, 1] = torch.tensor([0.9, 0.6])
    preds["logits"][:, :, 0] = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])  # query 0 best, 1 next ...
    preds["logits"][:, :, 1] = 0.0
    out = head.decode(preds, batch)
    assert len(out) == 2
    for sample, duration, frames in zip(out, (12.0, 30.0), (6, 9)):
        assert isinstance(sample["spans"], list) and isinstance(sample["spans"][0][0], float)
        assert len(sample["spans"]) == len(sample["scores"]) == 5 and len(sample["saliency"]) == frames
        assert sample["scores"] == sorted(sample["scores"], reverse=True)
        for start, end in sample["spans"]:
            assert 0.0 <= start <= end <= duration
        assert sample["spans"][0] == pytest.approx([0.0, 0.3 * duration])  # clipped at 0, in seconds
        assert sample["spans"][1] == pytest.approx([0.6 * duration, duration])  # clipped at the duration
    raw = cw_to_se(preds["spans"][1, 2]) * 30.0
    assert out[1]["spans"][2] == pytest.approx(raw.clamp(0, 30).tolist(), abs=1e-4)


def test_metrics_by_hand():
    head = make_head()
    outputs = [{"spans": [[2.0, 6.0], [0.0, 1.0]], "scores": [0.9, 0.1]},  # top-1 IoU with [2,8]: 4/6
               {"spans": [[0.0, 10.0]], "scores": [0.5]},  # exact
               {"spans": [], "scores": []}]  # no prediction: a miss
    targets = [{"spans": torch.tensor([[2.0, 8.0]])}, {"spans": torch.tensor([[0.0, 10.0]])},
               {"spans": torch.tensor([[1.0, 3.0]])}]
    m = head.metrics(outputs, targets)
    assert m["miou"] == pytest.approx([2 / 3, 1.0, 0.0])
    assert m["r1@0.3"] == [1.0, 1.0, 0.0] and m["r1@0.5"] == [1.0, 1.0, 0.0] and m["r1@0.7"] == [0.0, 1.0, 0.0]


def test_errors_name_the_argument_or_sample():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        CGDETRHead(hidden_size=D, d_model=30, num_heads=4)
    # eos_weight > 0 is its annotation, checked by the builder
    with pytest.raises(ValueError, match="eos_weight: must be greater than 0"):
        instantiate(HEADS, {"name": "cgdetr", "hidden_size": D, "eos_weight": 0.0})
    head = make_head()
    batch = make_batch()
    batch.timestamps[1] = batch.timestamps[1][:-1]
    with pytest.raises(ValueError, match="sample vid1: timestamps"):
        head(batch)
    batch = make_batch()
    batch.targets[0]["saliency"] = torch.zeros(2)
    with pytest.raises(ValueError, match="sample vid0: saliency target has 2 values for 6"):
        head.loss(head(batch), batch)
    del batch.targets[1]["saliency"]
    batch.targets[0]["saliency"] = torch.zeros(6)
    with pytest.raises(ValueError, match="sample vid1: targets have no 'saliency'"):
        head.loss(head(batch), batch)


def synthetic_grounding_set() -> HeadBatch:
    """4 videos whose in-span frames carry a shared 'event' direction; the query asks for the event."""
    g = torch.Generator().manual_seed(7)
    event = torch.randn(D, generator=g)
    frames, durations = (8, 12, 10, 16), [16.0, 12.0, 30.0, 16.0]
    spans = [[[2.0, 8.0]], [[7.0, 11.0]], [[3.0, 12.0]], [[10.0, 15.0]]]
    batch = make_batch(frames, queries=(3, 0, 5, 2), durations=durations, spans=spans, seed=3)
    for f, t in zip(batch.frame_features, batch.targets):
        f.mul_(0.5).add_(t["saliency"][:, None] * event)
    return batch


@pytest.fixture
def one_thread():
    """Tiny ops on a busy 2-core machine: intra-op threads mostly wait on each other; use one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_overfits_four_samples(one_thread):
    torch.manual_seed(0)
    head = make_head(dropout=0.0)
    batch = synthetic_grounding_set()
    targets = batch.targets

    def miou() -> float:
        head.eval()
        with torch.no_grad():
            out = head.decode(head(batch), batch)
        head.train()
        return sum(head.metrics(out, targets)["miou"]) / len(targets)

    start_miou = miou()
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    begin = time.perf_counter()
    first = None
    for _ in range(300):
        loss = head.loss(head(batch), batch)["loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    elapsed = time.perf_counter() - begin
    final_miou = miou()
    print(f"overfit: loss {first:.3f} → {loss.item():.3f}, mIoU {start_miou:.3f} → {final_miou:.3f}, {elapsed:.1f}s")
    assert loss.item() < 0.3 * first
    assert final_miou > max(0.7, start_miou + 0.2)
