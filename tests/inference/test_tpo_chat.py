"""Chat and batch inference on a TPO run: answers routed to the heads come back as spans in seconds with scores,
boxes, and masks (arrays at the video's size, RLE, PNGs), from Python, `lrc chat` and `lrc infer`.

The fit is short (one epoch of a tiny model), so before asking, the loaded model's LLM is taught to route on
the run's own training records for a few dozen steps (the heads stay as the run trained them); `lrc chat` and
`lrc infer` then read that model from an export folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lrc
from lrc.cli import main

ROOT = Path(__file__).resolve().parents[2]
TPO_DEMO = ROOT / "experiments" / "demo" / "tpo.yaml"
TASKS = ("temporal", "region", "mask")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import tiny_override_list
    from lrc.data.synth import synthesize
    from lrc.model.mllm import answer_loss

    tmp = tmp_path_factory.mktemp("tpo_chat")
    corpus = tmp / "corpus"
    synthesize(corpus, videos=4, seed=5, size=32, min_seconds=3.0, max_seconds=6.0, tasks=TASKS)
    overrides = [o for o in tiny_override_list(corpus, tmp) if not o.startswith("data.batch_size")] + [
        "data.batch_size=8", "data.tasks=[temporal,region,mask]", "model.heads.temporal.d_model=32",
        "model.heads.temporal.num_heads=2", "model.heads.region.mlp_hidden=32", "model.heads.region.image_size=32",
        "model.heads.mask.adapter_hidden=32", "model.heads.mask.image_size=64", "model.heads.mask.locator_image_size=32"]
    assert main(["fit", str(TPO_DEMO), "--out", str(tmp / "run"), *overrides]) == 0

    chat = lrc.load(tmp / "run")
    records = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()]
    picked = {task: next(r for r in records if r["task"] == task) for task in TASKS}
    samples = []
    for rec in picked.values():
        sampled, visual, _ = chat.encode(corpus / rec["video"])
        enc = chat.prompts.encode_conversation(rec["conversations"], sampled.duration, len(sampled.frames))
        samples.append((torch.tensor([enc.input_ids]), torch.tensor([enc.labels]), visual.detach()))
    opt = torch.optim.Adam(chat.model.llm.parameters(), lr=1e-2)
    with torch.enable_grad():
        for _ in range(30):
            for ids, labels, visual in samples:
                embeds = chat.model.heads.write_task_embeddings(chat.model.splice(ids, [visual]), ids)
                loss = answer_loss(chat.model.llm(inputs_embeds=embeds).logits, labels)
                opt.zero_grad()
                loss.backward()
                opt.step()
    chat._encoded = None
    return chat, corpus, picked, tmp


def test_chat_returns_spans_boxes_and_masks(routed):
    chat, corpus, picked, _ = routed
    results = {task: chat.chat(corpus / rec["video"], rec["conversations"][0]["value"], max_new_tokens=4)
               for task, rec in picked.items()}
    tokens = {task: [chat.tokenizer.convert_ids_to_tokens(t) for t in r.token_ids] for task, r in results.items()}
    assert tokens == {"temporal": ["<temp_begin>", "<temp>", "<|im_end|>"], "region": ["<box_begin>", "<box>", "<|im_end|>"],
                      "mask": ["<track_begin>", "<track>", "<|im_end|>"]}

    temporal = results["temporal"]
    assert temporal.spans and set(temporal.heads) == {"temporal"}
    assert all(0.0 <= s.start <= s.end <= temporal.duration + 1e-6 and 0.0 <= s.score <= 1.0 for s in temporal.spans)
    assert [s.score for s in temporal.spans] == sorted((s.score for s in temporal.spans), reverse=True)

    region = results["region"]
    assert len(region.boxes) == 1 and region.boxes[0].frame is None
    assert all(0.0 <= v <= 1.0 for v in region.boxes[0].xyxy) and region.boxes[0].pixels(32, 32)

    mask = results["mask"]
    t = len(mask.timestamps)
    assert mask.masks is not None and mask.masks.array.shape == (t, 32, 32) and mask.masks.array.dtype == bool
    from lrc.data.rle import decode

    rles = mask.masks.rle()
    assert len(rles) == t and all(np.array_equal(decode(r), m) for r, m in zip(rles, mask.masks.array))
    assert all(b.frame is not None and b.time == mask.timestamps[b.frame] for b in mask.boxes)
    json.dumps(mask.to_dict())  # JSON-ready, masks as RLE


def test_lrc_chat_and_infer_on_an_export_of_the_tpo_model(routed, tmp_path, capsys):
    from safetensors.torch import save_file

    chat, corpus, picked, tmp = routed
    export = tmp_path / "export"
    assert main(["export", str(tmp / "run"), "--out", str(export), "--no-hf-llm"]) == 0
    save_file({f"model.{k}": v.detach().clone().contiguous() for k, v in chat.model.state_dict().items()},
              str(export / "model.safetensors"))
    capsys.readouterr()

    rec = picked["mask"]
    masks = tmp_path / "masks"
    assert main(["chat", str(export), "--video", str(corpus / rec["video"]), "--question",
                 rec["conversations"][0]["value"], "--masks", str(masks), "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "masks 4 PNG(s)" in out and len(list((masks / "turn1").glob("mask_*.png"))) == 4
    rec = picked["temporal"]
    assert main(["chat", str(export), "--video", str(corpus / rec["video"]), "--question",
                 rec["conversations"][0]["value"], "--max-new-tokens", "4"]) == 0
    assert "span " in capsys.readouterr().out

    subset = tmp_path / "three.jsonl"
    subset.write_text("".join(json.dumps({**r, "video": str(corpus / r["video"])}) + "\n" for r in picked.values()))
    pred = tmp_path / "pred.jsonl"
    assert main(["infer", str(export), "--data", str(subset), "--out", str(pred), "--no-progress",
                 "--max-new-tokens", "4"]) == 0
    lines = {json.loads(line)["task"]: json.loads(line) for line in pred.read_text().splitlines()}
    assert lines["temporal"]["spans"] and lines["region"]["boxes"]
    assert len(lines["mask"]["masks"]["rle"]) == 4 and lines["mask"]["masks"]["rle"][0]["size"] == [32, 32]
