"""The region_grounding head: its attention finds the object the hidden state asks for, in the frame it
names, and its boxes follow — learnt in a few hundred steps on frames with two coloured squares."""

import pytest
import torch

from lrc.protocols import HeadBatch
from lrc.registry import HEADS
from lrc.train.build import instantiate

SIZE, FRAMES = 32, 3
COLOURS = torch.tensor([[1.0, 0.1, 0.1], [0.1, 0.1, 1.0]])  # red, blue


def scene(gen: torch.Generator):
    """Frames with a red and a blue 8x8 square at random places; the 'question' asks for one colour in
    one frame (the hidden state is a one-hot code of colour and frame, as an LLM's would carry them)."""
    frames = torch.zeros(FRAMES, 3, SIZE, SIZE)
    boxes = torch.zeros(FRAMES, 2, 4)
    for t in range(FRAMES):
        for c in range(2):
            x, y = (int(v) for v in torch.randint(0, SIZE - 8, (2,), generator=gen))
            frames[t, :, y:y + 8, x:x + 8] = COLOURS[c].view(3, 1, 1)
            boxes[t, c] = torch.tensor([x, y, x + 8, y + 8]) / SIZE
    colour = int(torch.randint(0, 2, (1,), generator=gen))
    frame = int(torch.randint(0, FRAMES, (1,), generator=gen))
    hidden = torch.zeros(16)
    hidden[colour] = 1
    hidden[2 + frame] = 1
    return frames, hidden, {"box": boxes[frame, colour], "frame": frame}


def batch_of(scenes) -> HeadBatch:
    return HeadBatch(
        task_hidden=torch.stack([h for _, h, _ in scenes]), query_hidden=[torch.zeros(0, 16)] * len(scenes),
        frame_features=[torch.zeros(FRAMES, 16)] * len(scenes), frames=[f for f, _, _ in scenes],
        timestamps=[torch.arange(FRAMES, dtype=torch.float32)] * len(scenes),
        durations=torch.full((len(scenes),), float(FRAMES)), targets=[t for _, _, t in scenes])


def test_attention_and_boxes_find_the_named_object_in_the_named_frame():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    head = HEADS.get("region_grounding")(hidden_size=16, mlp_hidden=64, d_model=32, image_size=SIZE)
    optim = torch.optim.Adam(head.parameters(), lr=3e-3)
    held_out = batch_of([scene(gen) for _ in range(64)])

    def iou_and_hits(batch):
        head.eval()
        with torch.no_grad():
            pred = head(batch)
            iou = head.metrics(head.decode(pred, batch), batch.targets)["miou"]
        head.train()
        grid = head.locator.grid
        hits = []
        for b, t in enumerate(batch.targets):
            cell = int(pred["attention"][b].argmax())
            hits.append(cell // (grid * grid) == t["frame"])
        return sum(iou) / len(iou), sum(hits) / len(hits)

    before, _ = iou_and_hits(held_out)
    for _ in range(300):
        batch = batch_of([scene(gen) for _ in range(16)])
        loss = head.loss(head(batch), batch)
        optim.zero_grad()
        loss["loss"].backward()
        optim.step()
    after, right_frame = iou_and_hits(held_out)
    assert before < 0.3
    assert after > 0.6, f"held-out mIoU {after:.2f} (was {before:.2f})"
    assert right_frame > 0.9  # the attention peaks in the frame the hidden state names
    assert "attention" in loss and torch.isfinite(loss["attention"])


@pytest.mark.parametrize("args,match", [({"image_size": 30}, "multiple of 8"), ({"attention_weight": -1.0}, "attention_weight"),
                                        ({"d_model": 0}, "d_model")])
def test_bad_arguments_say_which(args, match):
    with pytest.raises(ValueError, match=match):  # ranges: the annotations, checked by the builder
        instantiate(HEADS, {"name": "region_grounding", "hidden_size": 16, **args})


def test_more_frames_than_max_frames_is_a_clear_error():
    head = HEADS.get("region_grounding")(hidden_size=16, mlp_hidden=8, d_model=8, image_size=SIZE, max_frames=2)
    gen = torch.Generator().manual_seed(1)
    with pytest.raises(ValueError, match="max_frames"):
        head(batch_of([scene(gen)]))
