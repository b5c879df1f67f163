"""model.init: real checkpoint layouts written at tiny size, loaded through lrc, checked numerically.

Layouts (lrc/pretrained.py, docs/checkpoints.md): lrc's own (stage 2 from stage 1), transformers'
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

from lrc.build import build_model, build_tokenizer
from lrc.checkpoints import CheckpointError
from lrc.config import ConfigError, load_config, validate
from lrc.pretrained import load_pretrained, unpack_internlm2_wqkv

DEMO = Path(__file__).resolve().parents[1] / "experiments" / "demo" / "tiny.yaml"


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
    base = {k.replace(".base_layer.", "."): v for k, v in stage2.llm.model.get_base_model().state_dict().items()
            if ".lora_" not in k}
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
    assert "lrc checkpoint describe" in text and "model.init.strict=false" in text


def test_init_config_is_validated(tiny_overrides, tmp_path):
    with pytest.raises(ConfigError) as err:
        validate(load_config(DEMO, tiny_overrides + [f"model.init.path={tmp_path / 'nope'}", "model.init.layout=hf",
                                                     "model.init.components=[vit]", "model.init.pth=x"]))
    text = str(err.value)
    for needle in ("model.init.path: ", "does not exist", "model.init.layout: 'hf' is not one of",
                   "model.init.components: unknown component 'vit'", "model.init.pth: unknown key; did you mean 'path'"):
        assert needle in text, text
