"""SAM2 mask head (TPO): real SAM2 from its packaged config, random weights, 128 px, on the CPU."""

import pytest
import torch

from lrc.weights.checkpoints import CheckpointError
from lrc.protocols import Head, HeadBatch
from lrc.registry import HEADS
from lrc.train.build import instantiate

HIDDEN = 32
IMAGE_SIZE = 128  # SAM2 runs at 1024; 128 is the smallest size with room for its 5 stride-2 stages
FRAME = 64  # sampled frames are [T, 3, 64, 64]; SAM2 sees them resized to 128


def make_head(**kwargs):
    torch.manual_seed(0)
    kwargs = dict(hidden_size=HIDDEN, image_size=IMAGE_SIZE, adapter_hidden=64) | kwargs
    return HEADS.get("sam2_mask")(**kwargs)


@pytest.fixture(scope="module")
def head():
    return make_head()


def box_mask(top: int, left: int, bottom: int, right: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    masks = torch.zeros(frames, FRAME, FRAME, dtype=torch.bool)
    masks[:, top:bottom, left:right] = True
    box = torch.tensor([left, top, right, bottom], dtype=torch.float32) / FRAME
    return masks, box.expand(frames, 4).clone()


def make_batch(n: int = 2, frames: int = 3, visible0=None, requires_grad: bool = True) -> HeadBatch:
    g = torch.Generator().manual_seed(1)
    targets = []
    for i in range(n):
        masks, boxes = box_mask(8 + 4 * i, 10, 40, 44 - 4 * i, frames)
        visible = torch.ones(frames, dtype=torch.bool)
        if visible0 is not None and not visible0[i]:
            masks[0], boxes[0], visible[0] = False, 0.0, False
        targets.append({"masks": masks, "boxes": boxes, "visible": visible})
    return HeadBatch(
        task_hidden=torch.randn(n, HIDDEN, generator=g).requires_grad_(requires_grad),
        query_hidden=[torch.randn(4, HIDDEN, generator=g) for _ in range(n)],
        frame_features=[torch.randn(frames, HIDDEN, generator=g) for _ in range(n)],
        frames=[torch.rand(frames, 3, FRAME, FRAME, generator=g) for _ in range(n)],
        timestamps=[torch.arange(frames, dtype=torch.float32) for _ in range(n)],
        durations=torch.full((n,), float(frames)),
        targets=targets,
        ids=[f"clip{i}" for i in range(n)],
    )


def test_registered_with_the_head_protocol(head):
    from lrc_plugins.heads.sam2_mask import SAM2MaskHead

    assert HEADS.get("sam2_mask") is SAM2MaskHead
    assert isinstance(head, Head)
    assert (head.task, head.task_token, head.begin_token) == ("mask", "<track>", "<track_begin>")


def test_builds_real_sam2_from_packaged_config_at_reduced_size(head):
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    sam = head.sam
    assert isinstance(sam, SAM2VideoPredictor)
    assert sam.image_size == IMAGE_SIZE and sam.sam_image_embedding_size == IMAGE_SIZE // 16
    assert sam.sam_prompt_embed_dim == 256
    assert sam.fill_hole_area == 0  # the CUDA-only hole filling stays off on the CPU
    attn = sam.memory_attention.layers[0].self_attn
    assert attn.freqs_cis.shape[0] == (IMAGE_SIZE // 16) ** 2  # RoPE follows the image size
    assert not any(p.requires_grad for p in sam.parameters())  # frozen by default (TPO)
    assert not sam.training and head.training


def test_config_and_size_errors_say_what_to_do():
    with pytest.raises(FileNotFoundError, match="sam2.1_hiera_t.yaml"):
        make_head(config="configs/sam2.1/nope.yaml")
    with pytest.raises(ValueError, match="multiple of 32"):
        make_head(image_size=112)


def test_adapter_outputs(head):
    batch = make_batch(n=3, frames=2)
    out = head(batch)
    assert out["prompt_embedding"].shape == (3, 3, 256)
    assert out["box"].shape == (3, 4)
    box = out["box"]
    assert ((box >= 0) & (box <= 1)).all() and (box[:, 2:] >= box[:, :2]).all()  # valid xyxy
    assert out["mask_logits"].shape == (3, 1, 1, IMAGE_SIZE // 4, IMAGE_SIZE // 4)
    assert torch.isfinite(out["mask_logits"]).all()


def test_prompt_target_is_sam2s_box_embedding(head):
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.3, 0.1, 0.9, 0.4]])
    with torch.no_grad():
        target = head.box_prompt_embedding(boxes)
        # What SAM2 itself embeds for a box: two corners (labels 2, 3) in pixel units + padding.
        coords = boxes.view(2, 2, 2) * IMAGE_SIZE
        labels = torch.tensor([[2, 3], [2, 3]], dtype=torch.int32)
        reference, _ = head.sam.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    assert target.shape == (2, 3, 256)
    assert torch.allclose(target, reference)
    assert not torch.allclose(target[0, :2], target[1, :2])  # different boxes → different corner tokens
    assert torch.allclose(target[0, 2], target[1, 2])  # the padding token is the same


def test_training_decode_matches_sam2s_video_predictor_on_the_prompt_frame(head):
    """Fed SAM2's own box embedding, the training path gives the logits SAM2's video predictor gives."""
    from lrc_plugins.heads.sam2_mask import _frames_from_memory

    frames = torch.rand(2, 3, FRAME, FRAME, generator=torch.Generator().manual_seed(2))
    box = torch.tensor([0.2, 0.1, 0.7, 0.6])
    with torch.no_grad():
        ours = head.decode_prompt_frame(frames[:1], head.box_prompt_embedding(box[None]))
        with _frames_from_memory(head.preprocess(frames), FRAME, FRAME):
            state = head.sam.init_state(video_path="<in-memory frames>")
        head.sam.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=box.tolist(), normalize_coords=False)
    theirs = state["temp_output_dict_per_obj"][0]["cond_frame_outputs"][0]
    if theirs["object_score_logits"].item() > 0:
        assert torch.allclose(ours, theirs["pred_masks"], atol=1e-5)
    else:  # SAM2 replaces the logits of an "absent" object by a constant; ours stay raw for the loss
        assert (theirs["pred_masks"] < -100).all()


def test_loss_is_finite_and_reaches_task_hidden_but_not_frozen_sam(head):
    head.zero_grad(set_to_none=True)
    batch = make_batch()
    terms = head.loss(head(batch), batch)
    assert set(terms) == {"loss", "prompt", "box", "dice", "bce", "focal"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in terms.values())
    w = head.weights
    expected = sum(w[k] * terms[k] for k in ("prompt", "box", "dice", "bce", "focal"))
    assert torch.allclose(terms["loss"], expected)
    terms["loss"].backward()
    assert batch.task_hidden.grad is not None and batch.task_hidden.grad.abs().sum() > 0
    assert all(p.grad is not None for p in head.prompt_adapter.parameters())
    assert all(p.grad is not None for p in head.box_head.parameters())
    assert all(p.grad is None for p in head.sam.parameters())


def test_mask_loss_alone_trains_the_prompt_through_sam2s_decoder(head):
    """The Dice/BCE terms are real: their gradient flows back through the frozen decoder into the prompt."""
    head.zero_grad(set_to_none=True)
    batch = make_batch(n=1)
    terms = head.loss(head(batch), batch)
    (terms["dice"] + terms["bce"]).backward()
    assert batch.task_hidden.grad.abs().sum() > 0
    assert head.prompt_adapter[-1].weight.grad.abs().sum() > 0
    assert head.box_head[-1].weight.grad is None  # the box MLP is not on the mask path


def test_samples_invisible_at_the_prompt_frame_are_left_out(head):
    both = make_batch(n=2)
    first_only = make_batch(n=2, visible0=[True, False])
    with torch.no_grad():
        all_terms = head.loss(head(both), both)
        masked = head.loss(head(first_only), first_only)
        alone = HeadBatch(
            task_hidden=first_only.task_hidden[:1], query_hidden=first_only.query_hidden[:1],
            frame_features=first_only.frame_features[:1], frames=first_only.frames[:1],
            timestamps=first_only.timestamps[:1], durations=first_only.durations[:1],
            targets=first_only.targets[:1], ids=first_only.ids[:1],
        )
        single = head.loss(head(alone), alone)
    assert not torch.allclose(all_terms["loss"], masked["loss"])
    assert torch.allclose(masked["loss"], single["loss"], atol=1e-5)  # = sample 0 on its own


def test_unfrozen_sam_trains_what_the_losses_reach_in_decoder_and_prompt_encoder():
    head = make_head(freeze_sam=False)
    batch = make_batch(n=1)
    head.loss(head(batch), batch)["loss"].backward()
    trainable = [(n, p) for n, p in head.sam.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith(("sam_mask_decoder.", "sam_prompt_encoder.")) for n, _ in trainable)
    # Only what the losses reach is trainable, so every trainable parameter gets a gradient (DDP-safe).
    assert [n for n, p in trainable if p.grad is None] == []
    assert head.sam.sam_prompt_encoder.no_mask_embed.weight.grad is not None
    assert head.sam.sam_mask_decoder.conv_s0.weight.grad is not None  # high-res projections train too
    assert all(p.grad is None and not p.requires_grad for p in head.sam.image_encoder.parameters())
    assert head.sam.sam_mask_decoder.training and not head.sam.image_encoder.training


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_checkpoint_round_trip(tmp_path, fmt):
    source = make_head()
    with torch.no_grad():  # make the weights differ from a fresh seed-0 build
        for p in source.sam.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    state = {k: v.contiguous() for k, v in source.sam.state_dict().items()}
    path = tmp_path / f"sam2.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"model": state}, path)  # the layout of Meta's released checkpoints
    loaded = make_head(checkpoint=str(path))
    for key, value in loaded.sam.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_checkpoint_for_another_model_is_refused(tmp_path):
    path = tmp_path / "wrong.pt"
    torch.save({"model": {"not_a_sam2_key": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="missing"):
        make_head(checkpoint=str(path))


def test_decode_tracks_through_the_video_predictor(head):
    batch = make_batch(n=1, frames=3, requires_grad=False)
    head.eval()
    try:
        predictions = head(batch)
        outputs = head.decode(predictions, batch)
    finally:
        head.train()
    assert len(outputs) == 1
    masks = outputs[0]["masks"]
    assert masks.dtype == torch.bool and masks.shape == (3, FRAME, FRAME)
    assert outputs[0]["box"] == pytest.approx(predictions["box"][0].tolist())
    scores = head.metrics(outputs, batch.targets)
    assert set(scores) == {"j", "f", "jf"} and all(len(v) == 1 for v in scores.values())
    assert all(0.0 <= v[0] <= 1.0 for v in scores.values())


def test_track_masks_follow_the_frame_size(head):
    frames = torch.rand(2, 3, 48, 80)  # any H × W: SAM2 squashes to its square input and back
    masks = head.track(frames, torch.tensor([0.2, 0.2, 0.7, 0.8]))
    assert masks.shape == (2, 48, 80) and masks.dtype == torch.bool


def test_metrics_of_a_perfect_prediction_and_at_another_size(head):
    masks, _ = box_mask(8, 10, 40, 44, frames=2)
    targets = [{"masks": masks, "visible": torch.ones(2, dtype=torch.bool)}]
    assert head.metrics([{"masks": masks, "box": [0, 0, 1, 1]}], targets) == {"j": [1.0], "f": [1.0], "jf": [1.0]}
    # A prediction at twice the size is scored at the annotation's size.
    big = masks.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    assert head.metrics([{"masks": big, "box": [0, 0, 1, 1]}], targets)["jf"] == [1.0]


# -- box_source="frames" (the frame locator) and propagation="per_frame" --------------------------------

def square_scenes(n: int, frames: int, gen: torch.Generator) -> HeadBatch:
    """Frames with two coloured squares that move between frames; the hidden state names which one to track."""
    hidden, clips, targets = [], [], []
    names = torch.randn(2, HIDDEN, generator=gen)
    for _ in range(n):
        clip = torch.zeros(frames, 3, FRAME, FRAME)
        masks = torch.zeros(2, frames, FRAME, FRAME, dtype=torch.bool)
        boxes = torch.zeros(2, frames, 4)
        for t in range(frames):
            for k in range(2):
                top, left = (int(v) for v in torch.randint(0, FRAME - 16, (2,), generator=gen))
                clip[t, k, top:top + 16, left:left + 16] = 1.0  # object k is drawn in colour channel k
                masks[k, t, top:top + 16, left:left + 16] = True
                boxes[k, t] = torch.tensor([left, top, left + 16, top + 16]) / FRAME
        which = int(torch.randint(0, 2, (1,), generator=gen))
        hidden.append(names[which])
        clips.append(clip)
        targets.append({"masks": masks[which], "boxes": boxes[which],
                        "visible": torch.ones(frames, dtype=torch.bool)})
    return HeadBatch(task_hidden=torch.stack(hidden), query_hidden=[torch.zeros(1, HIDDEN)] * n,
                     frame_features=[torch.zeros(frames, HIDDEN)] * n, frames=clips,
                     timestamps=[torch.arange(frames, dtype=torch.float32)] * n, durations=torch.full((n,), float(frames)),
                     targets=targets, ids=[f"s{i}" for i in range(n)])


@pytest.mark.parametrize("propagation", ["video", "per_frame"])
def test_frame_locator_outputs_and_what_gets_gradients(propagation):
    head = make_head(box_source="frames", propagation=propagation, locator_dim=16, freeze_sam=False)
    assert not hasattr(head, "prompt_adapter")  # no unused parameters (DDP-safe)
    batch = make_batch(n=2, frames=3)
    out = head(batch)
    decoded = 3 if propagation == "per_frame" else 1
    assert out["frame_boxes"].shape == (2, 3, 4) and out["attention"].shape == (2, 3, (64 // 8) ** 2)
    assert out["mask_logits"].shape == (2, decoded, 1, IMAGE_SIZE // 4, IMAGE_SIZE // 4)
    # the prompt is SAM2's own embedding of the located box: what inference will prompt with
    assert torch.allclose(out["prompt_embedding"], head.box_prompt_embedding(out["box"]), atol=1e-6)
    terms = head.loss(out, batch)
    assert set(terms) == {"loss", "prompt", "box", "attention", "dice", "bce", "focal"}
    terms["loss"].backward()
    assert batch.task_hidden.grad.abs().sum() > 0
    trainable = [(n, p) for n, p in head.named_parameters() if p.requires_grad]
    assert [n for n, p in trainable if p.grad is None] == []


def test_per_frame_decode_thresholds_each_frames_own_logits():
    head = make_head(box_source="frames", propagation="per_frame", locator_dim=16).eval()
    batch = make_batch(n=2, frames=3, requires_grad=False)
    with torch.no_grad():
        out = head(batch)
        decoded = head.decode(out, batch)
    for i, d in enumerate(decoded):
        assert d["masks"].shape == (3, FRAME, FRAME) and d["masks"].dtype == torch.bool
        expected = torch.nn.functional.interpolate(out["mask_logits"][i], size=(FRAME, FRAME), mode="bilinear",
                                                   align_corners=False)[:, 0] > 0
        assert torch.equal(d["masks"], expected)
        assert len(d["frame_boxes"]) == 3


@pytest.mark.slow
def test_per_frame_mode_learns_to_segment_the_named_object_in_every_frame():
    """Random SAM2 + the locator: held-out J over all frames rises well above its untrained value."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    head = make_head(box_source="frames", propagation="per_frame", locator_dim=32, freeze_sam=False)
    optim = torch.optim.Adam([p for p in head.parameters() if p.requires_grad], lr=2e-3)
    held_out = square_scenes(12, 2, gen)

    def mean_j():
        head.eval()
        with torch.no_grad():
            values = head.metrics(head.decode(head(held_out), held_out), held_out.targets)["j"]
        head.train()
        return sum(values) / len(values)

    before = mean_j()
    for _ in range(60):
        batch = square_scenes(6, 2, gen)
        loss = head.loss(head(batch), batch)["loss"]
        optim.zero_grad()
        loss.backward()
        optim.step()
    after = mean_j()
    # measured: 0.04 -> 0.38 after these 60 steps (1,000 steps reach higher; the demo's figures are in docs/tpo.md)
    assert after > max(0.3, before + 0.25), f"held-out J {after:.2f} (untrained {before:.2f})"


def test_bad_box_source_and_propagation_say_what_to_do():
    # choices are the annotations' Literals, checked by the builder (and by lrc validate) before building
    args = {"name": "sam2_mask", "hidden_size": HIDDEN, "image_size": IMAGE_SIZE, "adapter_hidden": 64}
    with pytest.raises(ValueError, match="box_source: 'pixels' is not one of hidden, frames"):
        instantiate(HEADS, {**args, "box_source": "pixels"})
    with pytest.raises(ValueError, match="propagation: 'memory' is not one of video, per_frame"):
        instantiate(HEADS, {**args, "propagation": "memory"})
    with pytest.raises(ValueError, match="set box_source: frames"):
        make_head(propagation="per_frame")
