"""model.init: real checkpoint layouts written at tiny size, loaded through lrc, checked numerically.

Layouts (lrc/weights/pretrained.py, docs/checkpoints.md): lrc's own (stage 2 from stage 1), transformers'
InternVLForConditionalGeneration folders, and the original InternVL2.5 / InternVideo2.5 remote-code
folders (InternViT + mlp1 + InternLM2 or Qwen2), whose modeling code is never run: the tests compute
the reference from the original-layout tensors with their own plain torch code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lrc.train.build import build_model, build_tokenizer
from lrc.weights.checkpoints import CheckpointError
from lrc.config import ConfigError, load_config, validate
from lrc.weights.pretrained import load_pretrained, unpack_internlm2_wqkv

DEMO = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "tiny.yaml"


def built(overrides: list[str]):
    cfg = validate(load_config(DEMO, overrides))
    tok = build_tokenizer(cfg)
    torch.manual_seed(0)  # as `lrc fit` seeds before building: the same config builds the same weights
    return cfg, tok, build_model(cfg, tok).eval()


def module_state(model) -> dict[str, torch.Tensor]:
    """What a run's last.ckpt / `lrc export` holds: the LightningModule's keys ("model." + VideoMLLM's)."""
    return {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def perturb(model, seed: int = 7) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


# -- lrc layout: training stage 2 starts from stage 1 -------------------------------------------------------
def test_stage2_starts_from_stage1_with_new_tokens_heads_and_lora(tiny_overrides, tmp_path):
    _, tok1, stage1 = built(tiny_overrides)
    perturb(stage1)  # "trained": differs from any fresh init
    ckpt = tmp_path / "stage1.safetensors"
    save_file(module_state(stage1), str(ckpt))

    # stage 2 adds a TPO head (new task tokens → more embedding rows) and LoRA on the LLM
    _, tok2, stage2 = built(tiny_overrides + ["model.heads.region={name: region}", "model.llm.lora={r: 4}",
                                              f"model.init.path={ckpt}"])
    assert len(tok2) > len(tok1)
    s1 = stage1.state_dict()
    s2 = stage2.state_dict()
    for name, value in s1.items():
        if name.startswith("llm."):
            continue
        assert torch.equal(s2[name], value), name
    base = {k.replace(".token_adapter.base_layer.", ".").replace(".base_layer.", "."): v
            for k, v in stage2.llm.model.get_base_model().state_dict().items()
            if ".lora_" not in k and ".trainable_tokens_delta." not in k}
    for name, value in stage1.llm.model.state_dict().items():
        got = base[name]
        if got.shape != value.shape:  # embeddings: the first rows are stage 1's, the task-token rows are new
            assert torch.equal(got[: value.shape[0]], value) and got.shape[0] == len(tok2), name
        else:
            assert torch.equal(got, value), name
    # LoRA adapters start at zero (B = 0): the stage-2 LLM computes what stage 1's did
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        assert torch.allclose(stage2.llm(inputs_embeds=stage2.llm.embed(ids)).logits[..., : len(tok1)],
                              stage1.llm(inputs_embeds=stage1.llm.embed(ids)).logits, atol=1e-5)


def test_init_from_a_run_dir_and_selected_components(tiny_overrides, tmp_path):
    _, _, source = built(tiny_overrides)
    perturb(source)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": module_state(source), "epoch": 3}, run_dir / "checkpoints" / "last.ckpt")
    _, _, fresh = built(tiny_overrides)
    _, _, target = built(tiny_overrides + [f"model.init.path={run_dir}", "model.init.components=[encoder, llm]"])
    for name, value in target.state_dict().items():
        expected = source if name.split(".")[0] in ("encoder", "llm") else fresh
        assert torch.equal(value, expected.state_dict()[name]), name


def test_mismatched_checkpoint_lists_problems_and_fix(tiny_overrides, tmp_path):
    _, _, source = built(tiny_overrides)
    state = module_state(source)
    state.pop("model.projector.fc1.bias")
    state["model.encoder.extra.weight"] = torch.zeros(2)
    ckpt = tmp_path / "bad.safetensors"
    save_file(state, str(ckpt))
    bigger = [o for o in tiny_overrides if "llm.config.intermediate_size" not in o] + [
        "model.llm.config.intermediate_size=96"]
    with pytest.raises(CheckpointError) as err:
        built(bigger + [f"model.init.path={ckpt}"])
    text = str(err.value)
    assert "shape mismatch" in text and "mlp.gate_proj.weight: checkpoint [128, 64]" in text and "[96, 64]" in text
    assert "missing" in text and "projector.fc1.bias" in text
    assert "no place in the model" in text and "encoder.extra.weight" in text
    assert "config the checkpoint was trained with" in text and "model.init.strict=false" in text
    assert "gate_proj" not in text.split("missing")[1]  # a wrong shape is reported once, not also as missing


def test_init_config_is_validated(tiny_overrides, tmp_path):
    with pytest.raises(ConfigError) as err:
        validate(load_config(DEMO, tiny_overrides + [f"model.init.path={tmp_path / 'nope'}", "model.init.layout=hf",
                                                     "model.init.components=[vit]", "model.init.pth=x"]))
    text = str(err.value)
    for needle in ("model.init.path: ", "does not exist", "model.init.layout: 'hf' is not one of",
                   "model.init.components: item 0: 'vit' is not one of encoder",
                   "model.init.pth: unknown key. Did you mean 'path'"):
        assert needle in text, text


# -- helpers for InternVL layouts ------------------------------------------------------------------------
VISION = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=2, image_size=32,
              patch_size=8)  # 4x4 patches; pixel shuffle 0.5 → 2x2 tokens of 4·32 = 128 channels


def build_described(described: dict, corpus: Path, tmp_path: Path, extra: list[str] = ()):
    """An experiment whose model block is `lrc checkpoint describe`'s output (as a user would paste it)."""
    from omegaconf import OmegaConf

    described = dict(described)
    described["compressor"] = {"name": "pooling", "tokens_per_frame": 4, "clip_len": 1}
    path = tmp_path / "exp.yaml"
    path.write_text(f"base: [{DEMO}]\n" + OmegaConf.to_yaml(OmegaConf.create({"model": described})))
    return built_from(path, [f"data.root={corpus}", "data.synth_videos=null", *extra])


def built_from(path: Path, overrides: list[str]):
    cfg = validate(load_config(path, overrides))
    tok = build_tokenizer(cfg)
    torch.manual_seed(0)
    return cfg, tok, build_model(cfg, tok).eval()


def corpus_tokenizer(corpus: Path):
    from transformers import AutoTokenizer

    from lrc.data.prompt import prepare_tokenizer

    # InternVL's tokenizers hold <img> and </img> (its internvl2_5 prompt format wraps each frame in them)
    return prepare_tokenizer(AutoTokenizer.from_pretrained(str(corpus / "tokenizer")), extra_tokens=("<img>", "</img>"))


# -- transformers-native InternVLForConditionalGeneration ---------------------------------------------------
def test_internvl_hf_folder_loads_and_computes_what_transformers_computes(corpus, tmp_path):
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    from lrc.weights.pretrained import describe
    from lrc.data.prompt import IMG_CONTEXT

    tok = corpus_tokenizer(corpus)
    config = InternVLConfig(
        vision_config=dict(VISION, attention_bias=True), image_token_id=tok.convert_tokens_to_ids(IMG_CONTEXT),
        # 8 rows more than the tokenizer, as real checkpoints pad their vocabulary
        text_config=dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tok) + 8))
    torch.manual_seed(1)
    reference = InternVLForConditionalGeneration(config).eval()
    with torch.no_grad():  # non-trivial values everywhere (zero-init CLS/positions would hide a mix-up)
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path / "internvl-hf"
    reference.save_pretrained(folder)
    tok.save_pretrained(folder)

    _, tok2, model = build_described(describe(folder), corpus, tmp_path)
    assert len(tok2) == len(tok)
    assert model.llm.model.get_input_embeddings().num_embeddings == len(tok) + 8  # grown to the checkpoint's rows
    pixels = torch.randn(2, 3, 32, 32)
    ids = torch.tensor([[3, 7] + [config.image_token_id] * 4 + [9, 11]])
    with torch.no_grad():
        # vision tower → pixel shuffle → projector, against transformers' own get_image_features
        ours = model.projector(model.encoder(pixels))
        theirs = reference.model.get_image_features(pixel_values=pixels).pooler_output
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
        # the whole model on one image in a prompt
        visual = model.projector(model.encoder(pixels[:1]))[0]
        logits = model.llm(inputs_embeds=model.splice(ids, [visual])).logits
        torch.testing.assert_close(logits, reference(input_ids=ids, pixel_values=pixels[:1]).logits, rtol=1e-5, atol=1e-5)


# -- original InternVL2.5 / InternVideo2.5 remote-code folders -----------------------------------------------
def remote_vision(norm_type: str, qk_norm: bool, g: torch.Generator) -> tuple[dict, dict[str, torch.Tensor]]:
    """InternViT weights under their original names (modeling_intern_vit.py), random."""
    d, inner, layers = VISION["hidden_size"], VISION["intermediate_size"], VISION["num_hidden_layers"]
    cfg = {"architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", "hidden_size": d,
           "intermediate_size": inner, "num_attention_heads": VISION["num_attention_heads"],
           "num_hidden_layers": layers, "image_size": 32, "patch_size": 8, "qkv_bias": not qk_norm,
           "qk_normalization": qk_norm, "norm_type": norm_type, "layer_norm_eps": 1e-6, "hidden_act": "gelu",
           "attention_dropout": 0.0, "dropout": 0.0, "drop_path_rate": 0.1, "initializer_factor": 0.1,
           "use_flash_attn": True}
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.2  # noqa: E731
    w = {"vision_model.embeddings.class_embedding": r(1, 1, d),
         "vision_model.embeddings.patch_embedding.weight": r(d, 3, 8, 8),
         "vision_model.embeddings.patch_embedding.bias": r(d),
         "vision_model.embeddings.position_embedding": r(1, 17, d)}
    for i in range(layers):
        p = f"vision_model.encoder.layers.{i}."
        w |= {p + "attn.qkv.weight": r(3 * d, d), p + "attn.proj.weight": r(d, d), p + "attn.proj.bias": r(d),
              p + "mlp.fc1.weight": r(inner, d), p + "mlp.fc1.bias": r(inner), p + "mlp.fc2.weight": r(d, inner),
              p + "mlp.fc2.bias": r(d), p + "ls1": r(d), p + "ls2": r(d),
              p + "norm1.weight": 1 + r(d), p + "norm2.weight": 1 + r(d)}
        if not qk_norm:
            w[p + "attn.qkv.bias"] = r(3 * d)
        else:
            w |= {p + "attn.q_norm.weight": 1 + r(d), p + "attn.k_norm.weight": 1 + r(d)}
        if norm_type == "layer_norm":
            w |= {p + "norm1.bias": r(d), p + "norm2.bias": r(d)}
    w |= {"mlp1.0.weight": 1 + r(4 * d), "mlp1.0.bias": r(4 * d), "mlp1.1.weight": r(64, 4 * d), "mlp1.1.bias": r(64),
          "mlp1.3.weight": r(64, 64), "mlp1.3.bias": r(64)}
    return cfg, w


def internvit_reference(w: dict[str, torch.Tensor], cfg: dict, pixels: torch.Tensor) -> torch.Tensor:
    """InternViT's forward written from its published structure, straight from the original-layout tensors."""
    import torch.nn.functional as F

    heads, d = cfg["num_attention_heads"], cfg["hidden_size"]

    def norm(x, prefix):
        if cfg["norm_type"] == "layer_norm":
            return F.layer_norm(x, (d,), w[prefix + ".weight"], w[prefix + ".bias"], eps=1e-6)
        return w[prefix + ".weight"] * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))

    x = F.conv2d(pixels, w["vision_model.embeddings.patch_embedding.weight"],
                 w["vision_model.embeddings.patch_embedding.bias"], stride=8).flatten(2).transpose(1, 2)
    x = torch.cat([w["vision_model.embeddings.class_embedding"].expand(len(x), 1, d), x], dim=1)
    x = x + w["vision_model.embeddings.position_embedding"]
    b, n, _ = x.shape
    for i in range(cfg["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{i}."
        h = norm(x, p + "norm1")
        qkv = F.linear(h, w[p + "attn.qkv.weight"], w.get(p + "attn.qkv.bias"))
        q, k, v = qkv.reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        if cfg["qk_normalization"]:  # RMSNorm over all heads together
            rms = lambda t, key: (w[key] * (t.transpose(1, 2).flatten(2) * torch.rsqrt(  # noqa: E731
                t.transpose(1, 2).flatten(2).pow(2).mean(-1, keepdim=True) + 1e-6))).view(b, n, heads, -1).transpose(1, 2)
            q, k = rms(q, p + "attn.q_norm.weight"), rms(k, p + "attn.k_norm.weight")
        attn = ((q * (d // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        out = F.linear((attn @ v).transpose(1, 2).reshape(b, n, d), w[p + "attn.proj.weight"], w[p + "attn.proj.bias"])
        x = x + out * w[p + "ls1"]
        h = F.linear(F.gelu(F.linear(norm(x, p + "norm2"), w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"])),
                     w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"])
        x = x + h * w[p + "ls2"]
    return x


def internvl_pixel_shuffle(x: torch.Tensor, scale: float = 0.5) -> torch.Tensor:
    """InternVL's pixel_shuffle (ps_version v2) on [N, H, W, C], as its chat model applies it."""
    n, w, h, c = x.size()
    x = x.view(n, w, int(h * scale), int(c / scale)).permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * scale), int(w * scale), int(c / (scale * scale))).permute(0, 2, 1, 3).contiguous()
    return x


def pack_internlm2(llama_state: dict[str, torch.Tensor], heads: int, kv_heads: int) -> dict[str, torch.Tensor]:
    """A transformers llama state dict rewritten as InternLM2 (the inverse of what lrc loads)."""
    hidden = llama_state["model.embed_tokens.weight"].shape[1]
    dim, groups = hidden // heads, heads // kv_heads
    names = {"model.embed_tokens.": "model.tok_embeddings.", "self_attn.o_proj.": "attention.wo.",
             "mlp.gate_proj.": "feed_forward.w1.", "mlp.up_proj.": "feed_forward.w3.",
             "mlp.down_proj.": "feed_forward.w2.", "input_layernorm.": "attention_norm.",
             "post_attention_layernorm.": "ffn_norm.", "lm_head.": "output."}
    out = {}
    for key, value in llama_state.items():
        if ".self_attn.k_proj." in key or ".self_attn.v_proj." in key:
            continue
        if ".self_attn.q_proj." in key:
            q, k, v = (llama_state[key.replace("q_proj", x)] for x in ("q_proj", "k_proj", "v_proj"))
            rows = []
            for h in range(kv_heads):  # per kv group: its query heads, then its key head, then its value head
                for j in range(groups):
                    rows.append(q[(h * groups + j) * dim:(h * groups + j + 1) * dim])
                rows += [k[h * dim:(h + 1) * dim], v[h * dim:(h + 1) * dim]]
            out["language_model." + key.replace("self_attn.q_proj.", "attention.wqkv.")] = torch.cat(rows)
            continue
        for old, new in names.items():
            key = key.replace(old, new)
        out["language_model." + key] = value
    return out


def write_remote_folder(folder: Path, weights: dict[str, torch.Tensor], config: dict, marker: Path) -> None:
    """Sharded safetensors + index + config.json as the original repos have them, plus modeling code that
    must never run (it would create ``marker``)."""
    folder.mkdir()
    keys = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, part in shards.items():
        save_file({k: weights[k].contiguous() for k in part}, str(folder / name), metadata={"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": {k: n for n, part in shards.items() for k in part}}))
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_internvl_chat.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")


@pytest.mark.parametrize("llm_kind, norm_type, qk_norm", [("internlm2", "rms_norm", True),
                                                           ("qwen2", "layer_norm", False)])
def test_internvl_remote_folder_loads_without_its_code(corpus, tmp_path, llm_kind, norm_type, qk_norm):
    from transformers import AutoConfig, AutoModelForCausalLM

    from lrc.weights.pretrained import describe

    g = torch.Generator().manual_seed(2)
    vision_cfg, weights = remote_vision(norm_type, qk_norm, g)
    vocab = len(corpus_tokenizer(corpus))
    sizes = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=256, rms_norm_eps=1e-6,
                 tie_word_embeddings=False)
    torch.manual_seed(3)
    reference = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama" if llm_kind == "internlm2" else "qwen2",
                                                                      **sizes)).eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    if llm_kind == "internlm2":
        weights |= pack_internlm2(reference.state_dict(), heads=4, kv_heads=2)
        llm_cfg = dict(sizes, architectures=["InternLM2ForCausalLM"], model_type="internlm2", bias=False,
                       rope_theta=10000.0, rope_scaling=None, auto_map={"AutoModel": "modeling_internlm2.X"})
    else:
        weights |= {"language_model." + k: v for k, v in reference.state_dict().items()}
        llm_cfg = dict(sizes, architectures=["Qwen2ForCausalLM"], model_type="qwen2")
    config = {"architectures": ["InternVLChatModel"], "model_type": "internvl_chat", "downsample_ratio": 0.5,
              "select_layer": -1, "ps_version": "v2", "template": "internvl2_5", "force_image_size": 32,
              "auto_map": {"AutoModel": "modeling_internvl_chat.InternVLChatModel"},
              "vision_config": vision_cfg, "llm_config": llm_cfg}
    marker = tmp_path / "PWNED"
    folder = tmp_path / "InternVL2_5-tiny"
    write_remote_folder(folder, weights, config, marker)

    described = describe(folder)
    assert described["init"]["layout"] == "internvl_remote"
    assert described["llm"]["config"]["model_type"] == ("llama" if llm_kind == "internlm2" else "qwen2")
    _, _, model = build_described(described, corpus, tmp_path)
    assert not marker.exists()

    pixels = torch.randn(2, 3, 32, 32, generator=g)
    ids = torch.randint(0, vocab, (2, 9), generator=g)
    with torch.no_grad():
        patches = internvit_reference(weights, vision_cfg, pixels)[:, 1:]
        torch.testing.assert_close(model.encoder.vit(pixel_values=pixels).last_hidden_state[:, 1:], patches,
                                   rtol=1e-5, atol=1e-5)
        shuffled = internvl_pixel_shuffle(patches.reshape(2, 4, 4, -1)).reshape(2, 4, -1)
        mlp1 = torch.nn.Sequential(torch.nn.LayerNorm(128, eps=1e-5), torch.nn.Linear(128, 64), torch.nn.GELU(),
                                   torch.nn.Linear(64, 64))
        mlp1.load_state_dict({k[len("mlp1."):]: v for k, v in weights.items() if k.startswith("mlp1.")})
        torch.testing.assert_close(model.projector(model.encoder(pixels)), mlp1(shuffled), rtol=1e-5, atol=1e-5)
        # the LLM computes the reference llama/qwen2's logits
        torch.testing.assert_close(model.llm(inputs_embeds=model.llm.embed(ids)).logits,
                                   reference(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def test_internlm2_wqkv_layout_by_hand():
    """One packed tensor checked against InternLM2's own reading of it (view as (kv, g + 2, d)), not against
    the packing above: query head 3 of 4 with 2 kv heads is slot 1 of group 1; its key/value are group 1's."""
    g = torch.Generator().manual_seed(4)
    heads, kv, dim, hidden = 4, 2, 3, 5
    wqkv = torch.randn(kv * (heads // kv + 2) * dim, hidden, generator=g)
    x = torch.randn(hidden, generator=g)
    out = (wqkv @ x).view(kv, heads // kv + 2, dim)  # modeling_internlm2: "b q (h gs d) -> b q h gs d"
    q, k, v = unpack_internlm2_wqkv(wqkv, heads, kv, dim)
    # rows 4d..5d of wqkv: group 1 starts at (g + 2)·d = 4d, and query slot 0 of it is query head 2
    torch.testing.assert_close((q @ x).view(heads, dim)[2], wqkv[4 * dim:5 * dim] @ x)
    torch.testing.assert_close((q @ x).view(heads, dim)[3], out[1, 1])
    torch.testing.assert_close((k @ x).view(kv, dim)[1], out[1, 2])
    torch.testing.assert_close((v @ x).view(kv, dim)[1], out[1, 3])
    torch.testing.assert_close((v @ x).view(kv, dim)[0], wqkv[3 * dim:4 * dim] @ x)
    with pytest.raises(CheckpointError, match="need 18"):
        unpack_internlm2_wqkv(wqkv, 4, 1, 3)


# -- SAM2: the released checkpoint format ({"model": state_dict}) -------------------------------------------
def test_sam2_checkpoint_in_sams_own_format_loads_in_lrc_and_in_sam2(tmp_path):
    """The file the sam2_mask head reads is exactly what SAM2's own builder reads (sam2.build_sam), and a
    pickled object hidden beside the weights is refused, never unpickled."""
    from sam2.build_sam import build_sam2 as sam2_build

    from lrc.registry import HEADS

    make = lambda **kw: HEADS.get("sam2_mask")(hidden_size=32, image_size=128, adapter_hidden=16, **kw)  # noqa: E731
    torch.manual_seed(0)
    source = make()
    perturb(source.sam, seed=11)
    state = {k: v.contiguous() for k, v in source.sam.state_dict().items()}
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": state}, path)  # how Meta releases sam2*.pt

    torch.manual_seed(1)
    ours = make(checkpoint=str(path)).sam.state_dict()
    theirs = sam2_build("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=str(path), device="cpu",
                        apply_postprocessing=False).state_dict()  # strict load by SAM2 itself
    assert set(ours) == set(theirs) == set(state)
    for key in state:
        assert torch.equal(ours[key], state[key]) and torch.equal(theirs[key], state[key]), key

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "PWNED"), "w"))

    torch.save({"model": state, "extra": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        make(checkpoint=str(tmp_path / "evil.pt"))
    assert not (tmp_path / "PWNED").exists()


def test_init_folder_with_a_pickle_payload_is_refused(tiny_overrides, tmp_path):
    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "PWNED"), "w"))

    folder = tmp_path / "model"
    folder.mkdir()
    torch.save({"language_model.lm_head.weight": torch.zeros(2, 2), "x": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="never unpickles"):
        built(tiny_overrides + [f"model.init.path={folder}", "model.init.layout=internvl_hf"])
    assert not (tmp_path / "PWNED").exists()
