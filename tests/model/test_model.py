"""Model assembly: builder wiring, visual splicing into the prompt, pretrained round trips."""

from pathlib import Path

import torch

from lrc.train.build import build_data, build_model, build_tokenizer
from lrc.config import load_config, validate
from lrc.model.mllm import answer_loss, mcq_predictions
from lrc.data.prompt import IMG_CONTEXT

DEMO = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "tiny.yaml"


def _built(overrides):
    cfg = validate(load_config(DEMO, overrides))
    tok = build_tokenizer(cfg)
    model = build_model(cfg, tok).eval()
    data = build_data(cfg, tok, model)
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    return cfg, tok, model, batch


def test_builder_wires_dimensions(tiny_overrides):
    cfg, tok, model, batch = _built(tiny_overrides)
    assert model.compressor.tokens_per_frame == 4
    assert model.projector.out_dim == model.llm.hidden_size == 64
    assert model.llm.model.get_input_embeddings().num_embeddings == len(tok)
    assert model.img_context_id == tok.convert_tokens_to_ids(IMG_CONTEXT)


def test_visual_embeddings_land_in_their_slots_in_order(tiny_overrides):
    _, _, model, batch = _built(tiny_overrides)
    with torch.no_grad():
        embeds = model.embed(batch["input_ids"], batch["pixel_values"], batch["frames_per_sample"])
        visual = model.encode_video(batch["pixel_values"], batch["frames_per_sample"])
        text = model.llm.embed(batch["input_ids"])
    slots = batch["input_ids"] == model.img_context_id
    for b, vis in enumerate(visual):
        assert vis.shape[0] == 4 * batch["frames_per_sample"][b]
        assert torch.equal(embeds[b][slots[b]], vis)
        assert torch.equal(embeds[b][~slots[b]], text[b][~slots[b]])  # text positions untouched


def test_prompt_with_wrong_slot_count_is_a_clear_error(tiny_overrides):
    _, _, model, batch = _built(tiny_overrides)
    ids = batch["input_ids"].clone()
    first = (ids[0] == model.img_context_id).nonzero()[0, 0]
    ids[0, first] = 0
    try:
        model.embed(ids, batch["pixel_values"], batch["frames_per_sample"], batch["ids"])
    except ValueError as exc:
        assert batch["ids"][0] in str(exc) and "tokens_per_frame" in str(exc)
    else:
        raise AssertionError("a missing slot must raise")


def test_loss_covers_answers_only_and_mcq_scoring(tiny_overrides):
    _, tok, model, batch = _built(tiny_overrides)
    logits = model(batch).logits
    loss = answer_loss(logits, batch["labels"])
    assert torch.isfinite(loss)
    # changing a logit at a prompt position leaves the loss unchanged
    poked = logits.detach().clone()
    poked[0, 0] += 100
    assert torch.allclose(answer_loss(poked, batch["labels"]), loss.detach())
    # planting the right option at the answer position gives a perfect MCQ score
    planted = torch.zeros_like(logits)
    for b, opts in enumerate(batch["option_ids"]):
        planted[b, batch["answer_start"][b] - 1, opts[batch["answer_index"][b]]] = 1.0
    preds, golds = mcq_predictions(planted, batch)
    assert len(golds) == batch["size"] and torch.equal(preds, golds)


def test_llm_and_encoder_load_from_local_pretrained_folders(tiny_overrides, tmp_path):
    cfg, tok, model, batch = _built(tiny_overrides)
    llm_dir = tmp_path / "llm"
    model.llm.model.save_pretrained(llm_dir)
    tok.save_pretrained(llm_dir)
    from transformers import InternVLVisionConfig, InternVLVisionModel

    vit_dir = tmp_path / "vit"
    InternVLVisionModel(InternVLVisionConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                                             intermediate_size=128, image_size=32, patch_size=8)).save_pretrained(vit_dir)
    overrides = [o for o in tiny_overrides if not o.startswith(("model.encoder.", "model.llm."))] + [
        "model.llm.config=null", f"model.llm.pretrained={llm_dir}",
        "model.encoder={name: internvl_vit, pretrained: " + str(vit_dir) + ", pixel_shuffle: 0.5}",
    ]
    cfg2, tok2, model2, batch2 = _built(overrides)
    assert len(tok2) == len(tok)
    assert model2.encoder.out_dim == 256 and model2.encoder.num_tokens == 4  # 4x4 grid shuffled to 2x2
    ids = batch2["input_ids"][:, :10]
    with torch.no_grad():
        assert torch.allclose(model2.llm(inputs_embeds=model2.llm.embed(ids)).logits,
                              model.llm(inputs_embeds=model.llm.embed(ids)).logits, atol=1e-5)
        assert torch.isfinite(model2(batch2).logits).all()


def test_streaming_clips_matches_one_pass(tiny_overrides):
    _, _, model, batch = _built(tiny_overrides + ["data.sampler.num_frames=12"])
    assert batch["frames_per_sample"][0] == 12  # three clips of 4
    with torch.no_grad():
        model.chunk_frames = 1000
        whole = model.encode_video(batch["pixel_values"], batch["frames_per_sample"])
        model.chunk_frames = 1  # rounded up to one clip per pass
        streamed = model.encode_video(batch["pixel_values"], batch["frames_per_sample"])
    for a, b in zip(whole, streamed):
        assert torch.allclose(a, b, atol=1e-5)
