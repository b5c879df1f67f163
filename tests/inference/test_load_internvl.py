"""lrc.load of an InternVideo2.5 folder as released (original layout, InternLM2 LLM, tiny): the model block is
describe's, the merge width and prompt format come from its config.json, and it answers about a video."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lrc

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_load_an_internvideo2_5_folder_and_chat(corpus, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    sys.path.insert(0, str(ROOT / "tests" / "weights"))
    import test_checkpoints as helpers  # the original-layout writers (InternViT, InternLM2 packing)

    g = torch.Generator().manual_seed(2)
    vision_cfg, weights = helpers.remote_vision("rms_norm", True, g)
    tok = helpers.corpus_tokenizer(corpus)
    sizes = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=512, rms_norm_eps=1e-6,
                 tie_word_embeddings=False)
    torch.manual_seed(3)
    llama = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", **sizes))
    weights |= helpers.pack_internlm2(llama.state_dict(), heads=4, kv_heads=2)
    config = {"architectures": ["InternVLChatModel"], "model_type": "internvl_chat", "downsample_ratio": 0.5,
              "select_layer": -1, "ps_version": "v2", "template": "internvl2_5", "force_image_size": 32,
              "auto_map": {"AutoModel": "modeling_internvl_chat_hico2.InternVLChatModel"},
              "vision_config": vision_cfg,
              "llm_config": dict(sizes, architectures=["InternLM2ForCausalLM"], model_type="internlm2", bias=False,
                                 rope_theta=10000.0, rope_scaling=None)}
    folder = tmp_path / "InternVideo2_5-tiny"
    helpers.write_remote_folder(folder, weights, config, tmp_path / "PWNED")
    tok.save_pretrained(folder)

    chat = lrc.load(folder, overrides=["model.compressor.tokens_per_frame=2"])
    assert not (tmp_path / "PWNED").exists()
    cfg = chat.cfg["model"]
    assert cfg["prompt"]["name"] == "internvl2_5"
    assert cfg["compressor"]["head_dim"] == 4 * 32 // 4 and cfg["compressor"]["restore_order"] is False
    torch.testing.assert_close(chat.model.llm.model.lm_head.weight, llama.lm_head.weight)
    frames = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    result = chat.chat(frames, "Describe this video.", max_new_tokens=3)
    assert len(result.token_ids) >= 1 and len(result.timestamps) == 16 // 4 * 4
    prompt = chat.prompts.generation_prompt([{"from": "human", "value": "<video>\nDescribe this video."}], 8.0, 16)
    assert chat.tokenizer.decode(prompt.input_ids[:4]).startswith("<|im_start|>system")
