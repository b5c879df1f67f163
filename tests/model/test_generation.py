"""Generation (lrc/model/generation.py): the key/value cache changes nothing but the cost, with and without token
dropout at prefill; after drops each layer places a new token right after its own cached sequence, which is
VideoChat-Flash's decoding rule (position − the visual tokens dropped before that layer); sampling options."""

from pathlib import Path

import pytest
import torch

from lrc.config import load_config, validate
from lrc.data.prompt import PromptBuilder
from lrc.model.generation import Sampling, generate, next_token
from lrc.train.build import build_model, build_prompt, build_tokenizer

DEMO = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "tiny.yaml"
DROPOUT = ["model.token_dropout.enabled=true", "model.token_dropout.layers=[1,2]",
           "model.token_dropout.ratios=[0.5,0.25]", "model.token_dropout.mode=uniform_then_attention"]


def tiny(tiny_overrides, extra=()):
    overrides = [o for o in tiny_overrides if "num_hidden_layers" not in o] + ["model.llm.config.num_hidden_layers=3",
                                                                               *extra]
    cfg = validate(load_config(DEMO, overrides))
    tok = build_tokenizer(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, tok).eval()
    with torch.no_grad():  # a random model's logits are nearly flat; make the choices clear-cut
        for p in model.llm.parameters():
            p.mul_(4.0) if p.ndim > 1 else None
    prompts = PromptBuilder(tok, model.tokens_per_frame, prompt=build_prompt(cfg))
    enc = prompts.generation_prompt([{"from": "human", "value": "<video>\nWhat colour is the square?"}], 4.0, 4)
    pixels = torch.randn(4, 3, model.encoder.image_size, model.encoder.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        visual = model.encode_video(pixels, [4])[0]
    return model, enc, visual


@pytest.mark.parametrize("dropout", [False, True], ids=["plain", "token_dropout"])
def test_cached_generation_equals_recomputing_the_whole_sequence(tiny_overrides, dropout):
    model, enc, visual = tiny(tiny_overrides, DROPOUT if dropout else ())
    assert (model.token_dropout is not None) == dropout
    cached = generate(model, enc.input_ids, visual, max_new_tokens=12, use_cache=True)
    full = generate(model, enc.input_ids, visual, max_new_tokens=12, use_cache=False)
    assert cached.token_ids == full.token_ids and len(cached.token_ids) == 12
    # sampled with the same draws, the two paths follow the same varied sequence: equal distributions each step
    sampled = [generate(model, enc.input_ids, visual, max_new_tokens=16, use_cache=c, sampling=Sampling(
        do_sample=True, temperature=3.0, generator=torch.Generator().manual_seed(11))).token_ids for c in (True, False)]
    assert sampled[0] == sampled[1] and len(set(sampled[0])) > 4


def test_after_drops_each_layer_continues_its_own_positions(tiny_overrides):
    """Prefill with drops before layers 1 and 2 (keep 50 %, then 25 % of the V visual tokens): layer 0 caches the
    whole prompt (L), layer 1 L − V/2, layer 2 L − 3V/4 — so the next token's position at each layer, its cached
    length, is VideoChat-Flash's L − (V − kept_visual)."""
    from lrc.model.generation import _Sequence

    model, enc, visual = tiny(tiny_overrides, DROPOUT)
    seq = _Sequence(model, visual, None, use_cache=True)
    seq.prefill(enc.input_ids)
    length, v = len(enc.input_ids), visual.shape[0]
    reference = [length - (v - round(v * ratio)) for ratio in (1.0, 0.5, 0.25)]
    assert [seq.cache.get_seq_length(i) for i in range(3)] == reference
    seq.step(5)
    assert [seq.cache.get_seq_length(i) for i in range(3)] == [n + 1 for n in reference]


def test_sampling_is_reproducible_and_top_k_one_is_greedy(tiny_overrides):
    model, enc, visual = tiny(tiny_overrides)
    greedy = generate(model, enc.input_ids, visual, max_new_tokens=8)
    one = generate(model, enc.input_ids, visual, max_new_tokens=8,
                   sampling=Sampling(do_sample=True, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(3)))
    assert one.token_ids == greedy.token_ids
    runs = [generate(model, enc.input_ids, visual, max_new_tokens=8, sampling=Sampling(
        do_sample=True, temperature=2.0, generator=torch.Generator().manual_seed(s))).token_ids for s in (7, 7, 8)]
    assert runs[0] == runs[1]
    stopped = generate(model, enc.input_ids, visual, max_new_tokens=8, stop=lambda ids: len(ids) == 3)
    assert stopped.token_ids == greedy.token_ids[:3] and stopped.stopped_by == "stop"
    first = greedy.token_ids[0]
    assert generate(model, enc.input_ids, visual, max_new_tokens=8, stop_ids=[first]).token_ids == [first]


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    picks = {next_token(logits, Sampling(do_sample=True, top_p=0.7, generator=torch.Generator().manual_seed(s)))
             for s in range(200)}
    assert picks == {0, 1}
