"""HiCo level 2: token dropout inside the LLM (lrc/model/token_dropout.py)."""

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from lrc.config import ConfigError, load_config, validate
from lrc.model.token_dropout import TokenDropout, forward_with_token_dropout, query_positions

DEMO = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "tiny.yaml"


def tiny_lm(layers=2, rope_theta=10000.0, model_type="qwen2"):
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(model_type, vocab_size=50, hidden_size=32, intermediate_size=64,
                               num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                               rope_theta=rope_theta)
    cfg._attn_implementation = "sdpa"
    return AutoModelForCausalLM.from_config(cfg).eval()


def batch_inputs(lengths=(20, 14), visual=((3, 13), (2, 10))):
    """Right-padded embeddings; sample b has visual tokens at positions [start, end)."""
    torch.manual_seed(1)
    length = max(lengths)
    embeds = torch.randn(len(lengths), length, 32)
    attn = torch.zeros(len(lengths), length, dtype=torch.long)
    vis = torch.zeros(len(lengths), length, dtype=torch.bool)
    labels = torch.full((len(lengths), length), -100)
    for b, (n, (s, e)) in enumerate(zip(lengths, visual)):
        attn[b, :n] = 1
        vis[b, s:e] = True
        labels[b, n - 2: n] = 7  # the answer: the last two tokens
    return embeds, attn, vis, labels


@pytest.mark.parametrize("model_type", ["qwen2", "llama"])
@pytest.mark.parametrize("mode", ["uniform", "attention", "uniform_then_attention"])
def test_keep_ratio_one_is_the_plain_forward(model_type, mode):
    lm = tiny_lm(3, model_type=model_type)
    embeds, attn, vis, labels = batch_inputs()
    plain = lm(inputs_embeds=embeds, attention_mask=attn).logits
    out = forward_with_token_dropout(lm, embeds, attn, vis, TokenDropout(layers=[1, 2], ratios=[1.0, 1.0], mode=mode),
                                     labels=labels)
    for b, n in enumerate(attn.sum(1).tolist()):
        assert out.kept[b, :n].tolist() == list(range(n))
        torch.testing.assert_close(out.logits[b, :n], plain[b, :n], rtol=0, atol=1e-5)


def test_uniform_keeps_evenly_spaced_fraction_of_the_original_count():
    lm = tiny_lm(3)
    embeds, attn, vis, labels = batch_inputs()
    out = forward_with_token_dropout(lm, embeds, attn, vis, TokenDropout(layers=[1, 2], ratios=[0.5, 0.2], mode="uniform"),
                                     labels=labels)
    for b, (s, e) in enumerate(((3, 13), (2, 10))):
        kept = [p for p in out.kept[b].tolist() if p >= 0]
        kept_visual = [p for p in kept if s <= p < e]
        assert len(kept_visual) == round(0.2 * (e - s))
        assert kept_visual == sorted(kept_visual)
        text = [p for p in range(int(attn[b].sum())) if not s <= p < e]
        assert [p for p in kept if not s <= p < e] == text  # text tokens are never dropped
    # 10 visual tokens -> 5 from first to last (offsets 0,2,4,6,9) -> 2 of those, the first and last (0, 9)
    assert [p for p in out.kept[0].tolist() if 3 <= p < 13] == [3 + 0, 3 + 9]


def test_attention_mode_keeps_the_tokens_the_query_attends_to():
    """Plant a pattern: with near-zero rotation on one q/k channel, the query matches planted keys only."""
    lm = tiny_lm(1, rope_theta=1e6)
    layer = lm.model.layers[0]
    with torch.no_grad():
        layer.input_layernorm.weight.fill_(1.0)
        layer.self_attn.q_proj.weight.zero_()
        layer.self_attn.k_proj.weight.zero_()
        # channel 7 of each 16-dim head pairs with 15 and has the lowest rotary frequency
        layer.self_attn.q_proj.weight[7, 0] = 1.0
        layer.self_attn.q_proj.weight[16 + 7, 0] = 1.0
        layer.self_attn.k_proj.weight[7, 1] = 1.0
    length, planted = 24, [5, 9, 14]
    embeds = torch.zeros(1, length, 32)
    embeds[0, :, 2:] = 0.1 * torch.randn(length, 30)
    embeds[0, planted, 1] = 3.0
    vis = torch.zeros(1, length, dtype=torch.bool)
    vis[0, 2:18] = True
    labels = torch.full((1, length), -100)
    labels[0, 21:23] = 3  # answer span starts at 21: the query is position 20
    embeds[0, 20, 0] = 3.0
    assert query_positions(labels, torch.ones(1, length)) == [[20]]
    out = forward_with_token_dropout(lm, embeds, torch.ones(1, length, dtype=torch.long), vis,
                                     TokenDropout(layers=[0], ratios=[3 / 16], mode="attention"), labels=labels)
    kept_visual = [p for p in out.kept[0].tolist() if 2 <= p < 18]
    assert kept_visual == planted
    # the same schedule in uniform mode picks other tokens: the planted set is not an accident
    uni = forward_with_token_dropout(lm, embeds, torch.ones(1, length, dtype=torch.long), vis,
                                     TokenDropout(layers=[0], ratios=[3 / 16], mode="uniform"), labels=labels)
    assert [p for p in uni.kept[0].tolist() if 2 <= p < 18] != planted


def test_uniform_then_attention_switches_after_the_uniform_stages():
    s = TokenDropout(layers=[1, 2, 3], ratios=[1, 0.75, 0.25], mode="uniform_then_attention", uniform_stages=1)
    assert [s.method(i) for i in range(3)] == ["uniform", "attention", "attention"]


def test_bernoulli_draws_in_training_only():
    lm = tiny_lm(2)
    embeds, attn, vis, labels = batch_inputs(lengths=(60,), visual=((2, 52),))
    schedule = TokenDropout(layers=[1], ratios=[0.5], mode="uniform", bernoulli=True)
    counts = set()
    for seed in range(6):
        torch.manual_seed(seed)
        out = forward_with_token_dropout(lm, embeds, attn, vis, schedule, labels=labels, training=True)
        counts.add(sum(1 for p in out.kept[0].tolist() if 2 <= p < 52))
    assert len(counts) > 1 and all(10 <= c <= 40 for c in counts)  # ~Binomial(50, 0.5)
    evals = {tuple(forward_with_token_dropout(lm, embeds, attn, vis, schedule, labels=labels).kept[0].tolist())
             for _ in range(3)}
    assert len(evals) == 1


def test_works_through_a_peft_lora_wrapper():
    from peft import LoraConfig, get_peft_model

    lm = get_peft_model(tiny_lm(3), LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj"]))
    embeds, attn, vis, labels = batch_inputs()
    plain = lm(inputs_embeds=embeds, attention_mask=attn).logits
    same = forward_with_token_dropout(lm, embeds, attn, vis, TokenDropout(layers=[1], ratios=[1.0], mode="attention"),
                                      labels=labels)
    n = int(attn[0].sum())
    torch.testing.assert_close(same.logits[0, :n], plain[0, :n], rtol=0, atol=1e-5)
    dropped = forward_with_token_dropout(lm, embeds, attn, vis, TokenDropout(layers=[1], ratios=[0.3], mode="attention"),
                                         labels=labels)
    dropped.logits.sum().backward()
    assert any(p.grad is not None for n_, p in lm.named_parameters() if "lora_" in n_)


def test_model_with_dropout_keeps_answers_aligned(tiny_overrides):
    from lrc.train.build import build_data, build_model, build_tokenizer
    from lrc.model.mllm import answer_loss

    def run(extra):
        cfg = validate(load_config(DEMO, tiny_overrides + ["model.llm.config.num_hidden_layers=2"] + extra))
        tok = build_tokenizer(cfg)
        torch.manual_seed(0)
        model = build_model(cfg, tok).eval()
        data = build_data(cfg, tok, model)
        data.setup("fit")
        batch = next(iter(data.val_dataloader()))
        with torch.no_grad():
            return batch, model(batch)

    batch, plain = run([])
    _, full = run(["model.token_dropout={enabled: true, layers: [1], ratios: [1.0], mode: attention}"])
    assert torch.allclose(answer_loss(full.logits, full.labels), answer_loss(plain.logits, plain.labels), atol=1e-5)
    _, half = run(["model.token_dropout={enabled: true, layers: [1], ratios: [0.5], mode: uniform_then_attention}"])
    assert half.logits.shape[1] < plain.logits.shape[1]
    assert (half.labels != -100).sum() == (plain.labels != -100).sum()  # every answer token survives
    for b in range(batch["size"]):
        # the token at the answer start is the same token after compaction
        assert half.labels[b, half.answer_start[b]] == plain.labels[b, plain.answer_start[b]]


@pytest.mark.parametrize("override,needle", [
    ("model.token_dropout={enabled: true, layers: [4, 2], ratios: [0.5, 0.25]}", "increasing"),
    ("model.token_dropout={enabled: true, layers: [4], ratios: [0.5, 0.25]}", "one length"),
    ("model.token_dropout={enabled: true, layers: [4, 8], ratios: [0.25, 0.5]}", "non-increasing"),
    ("model.token_dropout={enabled: true, mode: random}", "is not one of"),
    ("model.token_dropout={enabled: true, ratio: [0.5]}", "did you mean 'ratios'"),
])
def test_bad_schedules_are_reported_by_validate(override, needle):
    with pytest.raises(ConfigError) as err:
        validate(load_config(DEMO, [override]))
    assert needle.lower() in str(err.value).lower()


@pytest.mark.parametrize("mode", ["attention", "uniform"])
def test_bernoulli_varies_the_count_but_training_keeps_the_modes_choice(mode):
    """eq. 2's Bernoulli draw sets how many tokens survive a drop; which ones is still the mode's choice, so
    training with bernoulli: true keeps exactly the tokens evaluation keeps at that count (attention-guided
    in attention mode), not a random subset."""
    lm = tiny_lm(2)
    embeds, attn, vis, labels = batch_inputs(lengths=(60,), visual=((2, 52),))
    counts = set()
    for seed in range(5):
        torch.manual_seed(seed)
        trained = forward_with_token_dropout(lm, embeds, attn, vis, TokenDropout(layers=[1], ratios=[0.5], mode=mode,
                                                                               bernoulli=True),
                                             labels=labels, training=True)
        kept = [p for p in trained.kept[0].tolist() if 2 <= p < 52]
        counts.add(len(kept))
        # the reference: the mode's own selection of that many tokens (evaluation, no draw)
        same_count = TokenDropout(layers=[1], ratios=[len(kept) / 50], mode=mode)
        evaluated = forward_with_token_dropout(lm, embeds, attn, vis, same_count, labels=labels)
        assert kept == [p for p in evaluated.kept[0].tolist() if 2 <= p < 52]
    assert len(counts) > 1  # the count still varies from step to step


def test_uniform_keeps_the_positions_videochat_flash_keeps():
    """VideoChat-Flash's uniform drop (flash_rank_drop): torch.linspace(0, n - 1, keep).long() over the visual
    tokens, offset by the first visual position."""
    from lrc.model.token_dropout import select

    for n, keep in ((50, 25), (256, 192), (192, 64), (7, 3), (10, 1)):
        visual = torch.arange(5, 5 + n)
        reference = [5 + int(i) for i in torch.linspace(0, n - 1, keep, dtype=torch.long)]
        assert select("uniform", keep, visual, None, bernoulli=False).tolist() == reference
