"""Loading InternVideo2.5 as released: what its config.json decides (the merge metric's width and order, the
prompt format) and its TPO parts mapped into lrc's heads — each checked against a restatement of the
reference computation (InternVideo2.5's modeling_internvl_chat_hico2.py, TPO's modeling_videochate.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from lrc.weights.pretrained import describe, implied_settings, load_pretrained, merge_metric_width

TPO_DEMO = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "tpo.yaml"
HICO_MAP = {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
            "AutoModel": "modeling_internvl_chat_hico2.InternVLChatModel"}


def internvideo_config(vision_hidden: int, llm_hidden: int, heads: int, kv_heads: int = 8) -> dict:
    """config.json of an InternVideo2.5 chat folder (InternVLChatConfig), at any size."""
    return {"architectures": ["InternVLChatModel"], "model_type": "internvl_chat", "auto_map": HICO_MAP,
            "template": "internvl2_5", "downsample_ratio": 0.5, "select_layer": -1, "ps_version": "v2",
            "force_image_size": 448,
            "vision_config": {"architectures": ["InternVisionModel"], "model_type": "intern_vit_6b",
                              "hidden_size": vision_hidden, "intermediate_size": 4 * vision_hidden,
                              "num_attention_heads": 16, "num_hidden_layers": 24, "image_size": 448, "patch_size": 14,
                              "qkv_bias": True, "qk_normalization": False, "norm_type": "layer_norm",
                              "layer_norm_eps": 1e-6, "hidden_act": "gelu"},
            "llm_config": {"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2",
                           "hidden_size": llm_hidden, "intermediate_size": 14336, "num_hidden_layers": 32,
                           "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": 92553,
                           "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 1000000,
                           "bias": False, "tie_word_embeddings": False}}


def write_folder(folder: Path, config: dict, weights: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "model.safetensors"))
    return folder


# -- the merge: InternVideo2.5's merge_tokens, restated -------------------------------------------------------------
def reference_merge_tokens(x: torch.Tensor, target: int, num_heads: int) -> torch.Tensor:
    """modeling_internvl_chat_hico2.merge_tokens: halve until one step reaches ``target``; each step's metric is
    the tokens averaged over ``num_heads`` groups of ``c // num_heads`` (llm_config.num_attention_heads),
    L2-normalised; A = even, B = odd positions; the r best A tokens (by their best cosine) are summed into
    their B partner weighted by size; output [unmerged A by descending score, then B]."""
    b, p, c = x.shape
    removals, left = [], p
    while left != target:
        if left - target <= left // 2:
            removals.append(left - target)
            break
        removals.append(left // 2)
        left -= left // 2
    size = torch.ones_like(x[..., :1])
    for r in removals:
        metric = x.reshape(b, x.shape[1], num_heads, c // num_heads).mean(2)
        metric = metric / metric.norm(dim=-1, keepdim=True)
        scores = metric[..., ::2, :] @ metric[..., 1::2, :].transpose(-1, -2)
        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
        unm_idx, src_idx = edge_idx[..., r:, :], edge_idx[..., :r, :]
        dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)

        def merge(t: torch.Tensor) -> torch.Tensor:
            src, dst = t[..., ::2, :], t[..., 1::2, :]
            n, t1, ch = src.shape
            unm = src.gather(dim=-2, index=unm_idx.expand(n, t1 - r, ch))
            src = src.gather(dim=-2, index=src_idx.expand(n, r, ch))
            return torch.cat([unm, dst.scatter_add(-2, dst_idx.expand(n, r, ch), src)], dim=1)

        x = merge(x * size)
        size = merge(size)
        x = x / size
    return x


def test_merge_width_comes_from_the_checkpoint_and_then_matches_the_reference(tmp_path):
    """InternVideo2.5-8B: 1024-wide InternViT, pixel shuffle 0.5 → 4096-wide tokens, 32 LLM heads: a 128-wide
    metric. Derived from config.json, the merge of a real-size clip (4 frames × 256 tokens × 4096) is the
    reference's; the old hard-coded 64 gives other tokens."""
    from lrc.registry import COMPRESSORS

    config = internvideo_config(vision_hidden=1024, llm_hidden=4096, heads=32)
    folder = write_folder(tmp_path / "InternVideo2_5_Chat_8B", config, {"temporal_token": torch.zeros(1, 1, 4096)})
    assert merge_metric_width(config, "internvl_remote") == (4096, 32, "config.json llm_config.num_attention_heads")
    implied = {i.key: i.value for i in implied_settings(folder)}
    assert implied == {"model.prompt": {"name": "internvl2_5"}, "model.compressor.head_dim": 128,
                       "model.compressor.restore_order": False}
    block = describe(folder)
    assert block["compressor"] == {"name": "tome", "clip_len": 4, "tokens_per_frame": 16, "head_dim": 128,
                                   "restore_order": False}
    assert block["prompt"] == {"name": "internvl2_5"}

    torch.manual_seed(0)
    clip = torch.randn(1, 4, 256, 4096)
    reference = reference_merge_tokens(clip.reshape(1, 1024, 4096), 64, num_heads=32)
    tome = COMPRESSORS.get("tome")(in_dim=4096, clip_len=4, tokens_per_frame=16, head_dim=implied[
        "model.compressor.head_dim"], restore_order=implied["model.compressor.restore_order"])
    torch.testing.assert_close(tome(clip), reference, rtol=1e-6, atol=1e-6)
    old = COMPRESSORS.get("tome")(in_dim=4096, clip_len=4, tokens_per_frame=16, head_dim=64, restore_order=False)
    same = torch.isclose(old(clip), reference, atol=1e-5).all(-1).float().mean()
    assert same < 0.5  # the 64-wide metric matches other tokens


def test_fit_config_takes_the_implied_width_unless_the_experiment_sets_one(tmp_path, tiny_overrides):
    from lrc.config import load_config, validate
    from lrc.train.build import resolve_implied

    folder = write_folder(tmp_path / "iv25", internvideo_config(vision_hidden=16, llm_hidden=64, heads=4),
                          {"box_token": torch.zeros(1, 1, 64)})
    base = [o for o in tiny_overrides if "compressor" not in o]
    # a value still at tome's default counts as not set (without the LoadedConfig to ask)
    loaded = load_config(TPO_DEMO.with_name("tiny.yaml"), base + [f"model.init.path={folder}",
                                                                 "model.compressor.head_dim=64"])
    cfg = resolve_implied(validate(loaded))
    assert cfg["model"]["compressor"]["head_dim"] == 16  # 16·4 / 4 heads
    assert cfg["model"]["compressor"]["restore_order"] is False
    assert cfg["model"]["prompt"]["name"] == "internvl2_5" and "system" in cfg["model"]["prompt"]
    assert resolve_implied(cfg) == cfg  # once resolved, nothing changes
    # a value the experiment set (the demo's head_dim: 32; the command line's prompt) is kept, with a warning
    loaded = load_config(TPO_DEMO.with_name("tiny.yaml"), base + [f"model.init.path={folder}", "model.prompt.name=chatml"])
    cfg = resolve_implied(validate(loaded), loaded)
    assert cfg["model"]["compressor"]["head_dim"] == 32 and cfg["model"]["prompt"]["name"] == "chatml"
    # no checkpoint: lrc's own format
    assert resolve_implied(validate(load_config(TPO_DEMO.with_name("tiny.yaml"), base)))["model"]["prompt"] == {
        "name": "chatml", "system": None, "time_prefix": True}


# -- TPO parts --------------------------------------------------------------------------------------------------------
def tpo_weights(model, hidden: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """InternVideo2.5's TPO parts under TPO's released names and shapes (modeling_videochate.py, modeling_base.py):
    task tokens [1, 1, D]; loc_encoder/loc_decoder (Linear, ReLU, Linear through D/2); track_embed MLP(D, D, 3·256)
    and track_embed_decode2 MLP(D, D, 4); SAM2's weights under sam.*; CG-DETR and the span/actionness MLPs."""
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.1  # noqa: E731
    w = {"temporal_token": r(1, 1, hidden), "box_token": r(1, 1, hidden), "track_token": r(1, 1, hidden),
         "loc_encoder.0.weight": r(hidden // 2, 4), "loc_encoder.0.bias": r(hidden // 2),
         "loc_encoder.2.weight": r(hidden, hidden // 2), "loc_encoder.2.bias": r(hidden),
         "loc_decoder.0.weight": r(hidden // 2, hidden), "loc_decoder.0.bias": r(hidden // 2),
         "loc_decoder.2.weight": r(4, hidden // 2), "loc_decoder.2.bias": r(4),
         "track_embed.layers.0.weight": r(hidden, hidden), "track_embed.layers.0.bias": r(hidden),
         "track_embed.layers.1.weight": r(768, hidden), "track_embed.layers.1.bias": r(768),
         "track_embed_decode2.layers.0.weight": r(hidden, hidden), "track_embed_decode2.layers.0.bias": r(hidden),
         "track_embed_decode2.layers.1.weight": r(4, hidden), "track_embed_decode2.layers.1.bias": r(4),
         "temporal_embed.layers.0.weight": r(hidden, hidden), "action_embed.layers.1.weight": r(1, hidden),
         "cg_model.query_embed.weight": r(10, 2), "cg_model.span_embed.layers.0.weight": r(256, 256),
         "cg_criterion.empty_weight": r(2)}
    w |= {f"sam.{k}": v + r(*v.shape) for k, v in model.heads.heads["mask"].sam.state_dict().items()}
    return w


@pytest.mark.slow
def test_tpo_parts_load_into_the_heads_and_the_rest_is_listed(tmp_path, tiny_overrides, corpus):
    from lrc.config import load_config, validate
    from lrc.train.build import build_model, build_tokenizer

    hidden = 64
    overrides = tiny_overrides + [
        "model.heads.temporal.d_model=32", "model.heads.temporal.num_heads=2",
        "model.heads.region.name=region", f"model.heads.region.mlp_hidden={hidden // 2}",
        "model.heads.region.activation=relu", "model.heads.region.box_format=xyxy",
        f"model.heads.mask.adapter_hidden={hidden}", "model.heads.mask.box_source=hidden",
        "model.heads.mask.propagation=video"]
    cfg = validate(load_config(TPO_DEMO, overrides))
    tok = build_tokenizer(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, tok).eval()
    weights = tpo_weights(model, hidden, torch.Generator().manual_seed(1))
    folder = write_folder(tmp_path / "iv25", internvideo_config(16, hidden, 4, kv_heads=2), weights)

    report = load_pretrained(model, folder, layout="internvl_remote")  # strict: the TPO parts are no error
    heads = model.heads
    for key, token in (("temporal_token", "<temp>"), ("box_token", "<box>"), ("track_token", "<track>")):
        task = next(t for t, h in heads.heads.items() if h.task_token == token)
        torch.testing.assert_close(heads.task_embeddings.weight[heads.tasks.index(task)], weights[key].reshape(-1))
    mask = heads.heads["mask"]
    for name, value in mask.sam.state_dict().items():
        torch.testing.assert_close(value, weights[f"sam.{name}"])
    torch.testing.assert_close(mask.prompt_adapter[2].weight, weights["track_embed.layers.1.weight"])
    torch.testing.assert_close(mask.box_head[0].bias, weights["track_embed_decode2.layers.0.bias"])
    # the region head computes TPO's loc_decoder (Linear, ReLU, Linear, raw xyxy) and loc_encoder
    from lrc.protocols import HeadBatch

    h = torch.randn(3, hidden)
    batch = HeadBatch(task_hidden=h, query_hidden=[], frame_features=[], frames=[], timestamps=[],
                      durations=torch.ones(3))
    tpo_box = F.linear(F.relu(F.linear(h, weights["loc_decoder.0.weight"], weights["loc_decoder.0.bias"])),
                       weights["loc_decoder.2.weight"], weights["loc_decoder.2.bias"])
    with torch.no_grad():
        torch.testing.assert_close(heads.heads["region"](batch)["boxes"], tpo_box.clamp(0, 1))
        boxes = torch.rand(2, 4)
        tpo_embed = F.linear(F.relu(F.linear(boxes, weights["loc_encoder.0.weight"], weights["loc_encoder.0.bias"])),
                             weights["loc_encoder.2.weight"], weights["loc_encoder.2.bias"])
        torch.testing.assert_close(heads.heads["region"].encode_box(boxes), tpo_embed)
    # every TPO weight without a place is listed by name, with why
    unmapped = {line.split(":")[0] for line in report.unmapped}
    assert unmapped == {"temporal_embed.layers.0.weight", "action_embed.layers.1.weight", "cg_model.query_embed.weight",
                        "cg_model.span_embed.layers.0.weight", "cg_criterion.empty_weight"}
    assert any("CG-DETR" in line for line in report.unmapped)
    assert report.loaded["heads"] == len(weights) - len(unmapped)
    assert any("ReLU" in n for n in report.notes)  # sam2_mask's adapter is a GELU MLP: said, not hidden

    # heads whose sizes do not fit: listed with the setting that would, not an error
    small = validate(load_config(TPO_DEMO, overrides[:-6] + ["model.heads.region.name=region"]))
    torch.manual_seed(0)
    other = build_model(small, build_tokenizer(small)).eval()
    report = load_pretrained(other, folder, layout="internvl_remote")
    assert any(line.startswith("loc_decoder.0.weight: checkpoint [32, 64] does not fit") and "mlp_hidden" in line
               for line in report.unmapped)


def test_a_run_implies_the_format_it_was_trained_with(tmp_path):
    """Stage 2 from stage 1: the prompt format comes from the run's config.yaml, without opening its weights."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"not read")
    (run / "config.yaml").write_text("model:\n  prompt: {name: internvl2_5, layout: finetune}\n")
    for path in (run, run / "checkpoints" / "last.ckpt"):
        assert [(i.key, i.value) for i in implied_settings(path)] == [
            ("model.prompt", {"name": "internvl2_5", "layout": "finetune"})]
    (run / "config.yaml").write_text("model: {}\n")  # a run from before prompt formats: nothing implied (chatml)
    assert implied_settings(run) == []
