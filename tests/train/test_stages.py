"""InternVideo2.5's three training stages (experiments/internvideo2_5/, docs/recipes.md).

The real-shape recipes validate without building anything; each tiny variant keeps its recipe's
training choices; one backward through each tiny stage gives gradients to exactly the parameters the
recipe means to train; and the chained tiny fits (stage 1 → 2 → 3, each starting from the previous
stage's checkpoint) leave every frozen weight, the LLM's base weights under LoRA included, bitwise
untouched.
"""

from pathlib import Path

import pytest
import torch

from lrc.config import load_config, validate

STAGES = Path(__file__).resolve().parents[2] / "experiments" / "internvideo2_5"
ALL_TASKS = ("mcq", "temporal", "region", "mask", "preference")


def real(stage: int) -> dict:
    return validate(load_config(STAGES / f"stage{stage}.yaml"))


def tiny(stage: int, *overrides: str) -> dict:
    return validate(load_config(STAGES / "tiny" / f"stage{stage}.yaml", list(overrides)))


@pytest.fixture(scope="session")
def stage_corpus(tmp_path_factory) -> Path:
    """10 short videos at 32 px with every task the stages use, preference pairs included."""
    from lrc.data.synth import synthesize

    root = tmp_path_factory.mktemp("stage_corpus")
    synthesize(root, videos=10, seed=5, size=32, min_seconds=3.0, max_seconds=8.0, tasks=ALL_TASKS)
    return root


# -- the real-shape recipes -----------------------------------------------------------------------
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_real_stage_is_internvl2_5_8b_shaped(stage):
    cfg = real(stage)
    m = cfg["model"]
    vit = m["encoder"]["config"]
    assert m["encoder"]["name"] == "internvl_vit" and m["encoder"]["pixel_shuffle"] == 0.5
    assert (vit["hidden_size"], vit["num_hidden_layers"], vit["num_attention_heads"], vit["intermediate_size"]) == \
        (1024, 24, 16, 4096)
    assert vit["image_size"] == [448, 448] and vit["patch_size"] == [14, 14] and vit["attention_bias"]
    llm = m["llm"]["config"]
    assert llm["model_type"] == "llama"  # InternLM2's architecture without its remote code
    assert (llm["hidden_size"], llm["num_hidden_layers"], llm["num_attention_heads"], llm["num_key_value_heads"],
            llm["intermediate_size"]) == (4096, 32, 32, 8, 14336)
    assert llm["rope_parameters"]["rope_theta"] == 1.0e6 and not llm["tie_word_embeddings"]
    # InternVideo2.5's merge metric: 4096-wide tokens over the LLM's 32 heads (merge_tokens), 128 wide
    assert m["compressor"] == {"name": "tome", "clip_len": 4, "tokens_per_frame": 16,
                               "head_dim": llm["hidden_size"] // llm["num_attention_heads"], "restore_order": True}
    assert m["compressor"]["head_dim"] == 128
    assert m["projector"]["name"] == "mlp" and m["projector"]["layer_norm"]
    # weights are an explicit override, never a made-up path
    assert m["encoder"]["pretrained"] is None and m["llm"]["pretrained"] is None and m["init"]["path"] is None
    d = cfg["distributed"]
    assert d["strategy"] in ("fsdp", "deepspeed") and d["precision"] == "bf16-mixed" and d["devices"] > 1
    global_batch = cfg["data"]["batch_size"] * d["devices"] * d["num_nodes"] * cfg["trainer"]["accumulate_grad_batches"]
    assert global_batch == 128  # InternVideo2.5 finetuning (paper §3.5, docs/recipes.md)


def test_real_stages_follow_the_paper():
    s1, s2, s3 = real(1), real(2), real(3)
    # stage 1: compressor + projector only, 4 frames, no heads, no LoRA
    assert set(s1["optim"]["freeze"]) == {"encoder", "llm"} and not s1["model"]["llm"].get("lora")
    # (the validated config writes out the sampler's other defaults: the whole video, start/end null, exact frames)
    uniform = {"name": "uniform", "start": None, "end": None, "exact": True}
    assert not s1["model"]["heads"] and s1["data"]["sampler"] == {**uniform, "num_frames": 4}
    # stage 2: heads + LoRA on the LLM, encoder frozen, SAM2 frozen, 8 frames, no DPO yet
    assert s2["optim"]["freeze"] == ["encoder"] and s2["model"]["llm"]["lora"]["r"] > 0
    assert set(s2["model"]["heads"]) == {"temporal", "region", "mask"} and s2["model"]["heads"]["mask"]["freeze_sam"]
    assert s2["data"]["sampler"] == {**uniform, "num_frames": 8} and s2["loss"]["dpo_weight"] == 0
    assert s2["loss"]["head_weights"]["temporal"] == 0.05  # TPO scales the temporal loss
    # stage 3: everything trains (LLM through the same LoRA), 64-512 frames, token dropout, DPO
    assert s3["optim"]["freeze"] == [] and s3["model"]["llm"]["lora"] == s2["model"]["llm"]["lora"]
    assert (s3["data"]["sampler"]["min_frames"], s3["data"]["sampler"]["max_frames"]) == (64, 512)
    assert s3["model"]["token_dropout"]["enabled"] and s3["loss"]["dpo_weight"] > 0
    assert s3["optim"]["lr"]["encoder"] == 2e-6 and s3["optim"]["lr"]["projector"] == 1e-5
    for cfg in (s1, s2):
        assert not cfg["model"]["token_dropout"]["enabled"]


# -- the tiny variants keep the recipe ------------------------------------------------------------
RECIPE_KEYS = ("optim.freeze", "optim.lr", "optim.weight_decay", "optim.warmup_ratio", "loss",
               "model.llm.lora.target_modules", "model.llm.lora.lora_dropout", "model.compressor.name",
               "model.compressor.clip_len", "model.compressor.tokens_per_frame", "model.encoder.name",
               "model.encoder.pixel_shuffle", "model.llm.config.model_type", "model.llm.config.rope_parameters",
               "model.token_dropout.enabled", "model.token_dropout.ratios", "model.token_dropout.mode",
               "model.token_dropout.bernoulli", "data.sampler.name", "trainer.max_epochs")


def _get(cfg: dict, key: str):
    for part in key.split("."):
        cfg = cfg.get(part) if isinstance(cfg, dict) else None
    return cfg


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_tiny_stage_keeps_the_recipe(stage):
    big, small = real(stage), tiny(stage)
    for key in RECIPE_KEYS:
        assert _get(small, key) == _get(big, key), key
    assert {k: v["name"] for k, v in small["model"]["heads"].items()} == \
        {k: v["name"] for k, v in big["model"]["heads"].items()}
    for label, head in big["model"]["heads"].items():
        assert small["model"]["heads"][label].get("freeze_sam") == head.get("freeze_sam")
    assert bool(small["model"]["llm"].get("lora")) == bool(big["model"]["llm"].get("lora"))


# -- exactly the intended parameters train --------------------------------------------------------
def intended(cfg: dict, name: str) -> bool:
    """Whether the recipe means parameter ``name`` of the VideoMLLM to train."""
    component = name.split(".")[0]
    if component in cfg["optim"]["freeze"]:
        return False
    if component == "llm" and cfg["model"]["llm"].get("lora"):
        # LoRA freezes the LLM's own weights; the TPO tokens' embedding rows stay trainable (wrap_lora)
        return "lora_" in name or "trainable_tokens_delta" in name
    if component == "heads" and ".heads.mask.sam." in name:
        return not cfg["model"]["heads"]["mask"].get("freeze_sam", True)
    return True


def build_stage(cfg: dict):
    from lrc.train.build import build_data, build_model, build_module, build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer(cfg)
    model = build_model(cfg, tokenizer)
    module = build_module(cfg, model)  # applies optim.freeze
    data = build_data(cfg, tokenizer, model)
    data.setup("fit")
    return model, module, data


def batch_with_every_task(data) -> dict:
    """One training sample of each task in the stage's data, and one with an input box (<region>)."""
    ds = data.dataset("train")
    picked: dict[object, int] = {}
    for i, record in enumerate(ds.records):
        picked.setdefault(record.task, i)
        if any("<region>" in turn["value"] for turn in record.conversations):
            picked.setdefault("<region>", i)  # its input box is computed once frames are sampled
    return data.collate([ds[i] for i in sorted(set(picked.values()))])


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_one_backward_reaches_exactly_the_intended_parameters(stage, stage_corpus):
    cfg = tiny(stage, f"data.root={stage_corpus}", "data.synth_videos=null")
    model, module, data = build_stage(cfg)
    batch = batch_with_every_task(data)
    model.train()
    module.losses(batch, model(batch))["loss"].backward()
    params = dict(model.named_parameters())
    expected = {n for n in params if intended(cfg, n)}
    trainable = {n for n, p in params.items() if p.requires_grad}
    with_grad = {n for n, p in params.items() if p.grad is not None}
    assert trainable == expected, (sorted(trainable - expected)[:5], sorted(expected - trainable)[:5])
    assert with_grad == expected, (sorted(with_grad - expected)[:5], sorted(expected - with_grad)[:5])
    # the optimizer holds exactly these, in the recipe's learning-rate groups
    module.trainer = type("T", (), {"estimated_stepping_batches": 10})()
    groups = module.configure_optimizers()["optimizer"].param_groups
    in_optimizer = {id(p) for g in groups for p in g["params"]}
    assert in_optimizer == {id(params[n]) for n in expected}
    for g in groups:
        assert g["lr"] == cfg["optim"]["lr"][g["name"]]
    trained = {1: {"projector"}, 2: {"projector", "heads", "llm"}, 3: {"encoder", "projector", "heads", "llm"}}
    assert {n.split(".")[0] for n in expected} == trained[stage]  # ToMe has no weights to train


# -- chained tiny fits: each stage from the previous one's checkpoint -------------------------------
def _weights(path: Path) -> dict[str, torch.Tensor]:
    from lrc.weights.checkpoints import load_state_dict_file
    from lrc.weights.pretrained import canonical

    return {canonical(k[len("model."):]): v for k, v in load_state_dict_file(path).items() if k.startswith("model.")}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    rows = min(a.shape[0], b.shape[0]) if a.dim() else None  # embeddings grow by the task tokens' rows
    return torch.equal(a[:rows], b[:rows]) if a.dim() and a.shape[1:] == b.shape[1:] else torch.equal(a, b)


@pytest.mark.slow
def test_stages_chain_and_frozen_weights_stay_bitwise(stage_corpus, tmp_path):
    from lrc.cli import main

    common = [f"data.root={stage_corpus}", "data.synth_videos=null", f"run.root={tmp_path / 'runs'}",
              "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    ckpt: dict[int, Path] = {}
    for stage in (1, 2, 3):
        init = [f"model.init.path={ckpt[stage - 1]}"] if stage > 1 else []
        out = tmp_path / f"stage{stage}"
        assert main(["fit", str(STAGES / "tiny" / f"stage{stage}.yaml"), "--out", str(out), *common, *init]) == 0
        ckpt[stage] = out / "checkpoints" / "last.ckpt"
    w1, w2, w3 = (_weights(ckpt[s]) for s in (1, 2, 3))
    # stage 1 built its model from the seed; the same build gives the weights it started from
    cfg1 = tiny(1, *common)
    model, _, _ = build_stage(cfg1)
    w0 = {k: v.detach() for k, v in model.state_dict().items()}

    def keys(weights, prefix, lora=False):
        return [k for k in weights if k.startswith(prefix)
                and ("lora_" in k or "trainable_tokens_delta" in k) == lora]

    # stage 1 trains the projector only
    assert all(torch.equal(w1[k], w0[k]) for k in keys(w0, "encoder.") + keys(w0, "llm."))
    assert any(not torch.equal(w1[k], w0[k]) for k in keys(w0, "projector."))
    # stage 2 starts from stage 1; the LLM's base weights (LoRA) and the encoder stay bitwise; LoRA trains
    base2 = keys(w2, "llm.")
    assert base2 and all(_same(w2[k], w1[k]) for k in base2 if k in w1)
    assert all(torch.equal(w2[k], w1[k]) for k in keys(w1, "encoder."))
    assert any(w2[k].abs().sum() > 0 for k in keys(w2, "llm.", lora=True) if "lora_B" in k)
    # stage 3 starts from stage 2 with its adapters; the encoder trains now, the LLM's base still does not
    assert all(torch.equal(w3[k], w2[k]) for k in base2)
    assert any(not torch.equal(w3[k], w2[k]) for k in keys(w2, "encoder."))
    assert any(not torch.equal(w3[k], w2[k]) for k in keys(w2, "llm.", lora=True))
    assert all(torch.equal(w3[k], w2[k]) for k in w3 if ".heads.mask.sam." in k)
