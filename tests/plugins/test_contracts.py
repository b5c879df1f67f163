"""Protocol tests run over every registered plugin: registering a plugin gets it tested here.

Each built plugin must satisfy its kind's protocol in lrc/protocols.py (``isinstance`` against the
runtime-checkable ``Protocol``: the members lrc's core uses exist) and the behaviour lrc relies on
(shapes, counts, order, determinism, gradients); an optional capability, when a plugin has it, is
tested too. Each plugin is built with the arguments of the shared vocabulary that its signature
accepts; a plugin whose required arguments are not in that vocabulary must add a case to EXTRA_ARGS.
"""

import inspect

import numpy as np
import pytest
import torch

from lrc.protocols import (LLM, BoxEncodingHead, Compressor, Encoder, Head, HeadBatch, Projector, Sampler,
                           SequenceParallelLLM, TokenDropoutLLM)
from lrc.registry import COMPRESSORS, ENCODERS, HEADS, LLMS, PROJECTORS, SAMPLERS

# Small-size arguments, for plugins whose defaults are real-size models.
EXTRA_ARGS = {
    ("encoders", "timm_vit"): dict(image_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=4),
    ("encoders", "internvl_vit"): dict(config=dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                                                   intermediate_size=128, image_size=32, patch_size=8)),
    ("llms", "hf_causal_lm"): dict(config=dict(model_type="qwen2", hidden_size=64, intermediate_size=128,
                                               num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)),
}
# Small sizes shared by the heads (each takes those its signature has).
HEAD_ARGS = dict(d_model=32, num_heads=2, ffn_dim=64, num_encoder_layers=1, num_decoder_layers=1, num_queries=3,
                 num_dummies=2, mlp_hidden=32, adapter_hidden=32, image_size=128, dropout=0.0)


def build(registry, name, **shared):
    cls = registry.get(name)
    params = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in shared.items() if k in params}
    kwargs.update(EXTRA_ARGS.get((registry.kind, name), {}))
    return cls(**kwargs)


@pytest.mark.parametrize("name", COMPRESSORS.names())
@pytest.mark.parametrize("frames,clip_len,k", [(4, 4, 4), (8, 4, 2), (6, 2, 1)])
def test_compressor_exact_count_shape_and_batch_independence(name, frames, clip_len, k):
    torch.manual_seed(0)
    comp = build(COMPRESSORS, name, in_dim=64, frame_tokens=16, clip_len=clip_len, tokens_per_frame=k)
    assert isinstance(comp, Compressor), "a compressor needs out_dim, tokens_per_frame, clip_len and forward"
    assert isinstance(comp, torch.nn.Module)
    if "tokens_per_frame" in inspect.signature(type(comp)).parameters:
        assert comp.tokens_per_frame == k
    x = torch.randn(3, frames, 16, 64)
    out = comp(x)
    assert out.shape == (3, frames * comp.tokens_per_frame, comp.out_dim)
    alone = comp(x[1:2])
    assert torch.allclose(out[1:2], alone, atol=1e-5), "a sample's output must not depend on its batch"
    assert torch.equal(comp(x), out), "compressors are deterministic in eval"


@pytest.mark.parametrize("name", COMPRESSORS.names())
def test_compressor_passes_gradients_to_its_input(name):
    comp = build(COMPRESSORS, name, in_dim=64, frame_tokens=16, clip_len=4, tokens_per_frame=4)
    x = torch.randn(1, 4, 16, 64, requires_grad=True)
    comp(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for p in comp.parameters():
        if p.requires_grad:
            assert p.grad is not None


@pytest.mark.parametrize("name", COMPRESSORS.names())
def test_compressor_rejects_frames_not_multiple_of_clip(name):
    comp = build(COMPRESSORS, name, in_dim=64, frame_tokens=16, clip_len=4, tokens_per_frame=4)
    with pytest.raises(ValueError, match="clip_len"):
        comp(torch.randn(1, 6, 16, 64))


@pytest.mark.parametrize("name", COMPRESSORS.names())
def test_compressor_refuses_tokens_of_the_wrong_rank_or_width(name):
    """lrc's own compressors say it through lrc.protocols.check_clip_tokens."""
    comp = build(COMPRESSORS, name, in_dim=64, frame_tokens=16, clip_len=4, tokens_per_frame=4)
    with pytest.raises(ValueError, match=name):
        comp(torch.randn(4, 16, 64))
    with pytest.raises(ValueError, match=name):
        comp(torch.randn(1, 4, 16, 48))


@pytest.mark.parametrize("name", ENCODERS.names())
def test_encoder_protocol(name):
    enc = build(ENCODERS, name)
    assert isinstance(enc, Encoder), "an encoder needs out_dim, num_tokens, image_size, mean, std and forward"
    assert isinstance(enc, torch.nn.Module)
    x = torch.randn(2, 3, enc.image_size, enc.image_size)
    out = enc(x)
    assert out.shape == (2, enc.num_tokens, enc.out_dim)
    assert len(enc.mean) == len(enc.std) == 3


@pytest.mark.parametrize("name", PROJECTORS.names())
def test_projector_protocol(name):
    proj = build(PROJECTORS, name, in_dim=48, out_dim=32)
    assert isinstance(proj, Projector) and isinstance(proj, torch.nn.Module)
    assert proj(torch.randn(5, 48)).shape == (5, 32) and proj.out_dim == 32
    assert proj(torch.randn(2, 3, 48)).shape == (2, 3, 32)


@pytest.mark.parametrize("name", LLMS.names())
def test_llm_protocol(name):
    llm = build(LLMS, name, vocab_size=50)
    assert isinstance(llm, LLM), "an LLM needs hidden_size, embed and forward"
    assert isinstance(llm, torch.nn.Module)
    ids = torch.randint(0, 50, (2, 7))
    emb = llm.embed(ids)
    assert emb.shape == (2, 7, llm.hidden_size)
    out = llm(inputs_embeds=emb, attention_mask=torch.ones(2, 7, dtype=torch.long), output_hidden_states=True)
    assert out.logits.shape == (2, 7, 50)
    assert out.hidden_states[-1].shape == (2, 7, llm.hidden_size), "TPO's heads read the last layer's hidden states"


@pytest.mark.parametrize("name", LLMS.names())
def test_llm_packed_row_attends_within_each_sample(name):
    """data.packing: samples share one row, position_ids restart per sample and there is no mask."""
    torch.manual_seed(0)
    llm = build(LLMS, name, vocab_size=50).eval()
    a, b = llm.embed(torch.randint(0, 50, (1, 5))), llm.embed(torch.randint(0, 50, (1, 3)))
    with torch.no_grad():
        row = llm(inputs_embeds=torch.cat([a, b], dim=1), attention_mask=None,
                  position_ids=torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]])).logits
        alone = [llm(inputs_embeds=x, attention_mask=torch.ones(1, x.shape[1], dtype=torch.long)).logits for x in (a, b)]
    torch.testing.assert_close(row[:, :5], alone[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(row[:, 5:], alone[1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", LLMS.names())
def test_llm_optional_capabilities_keep_their_protocols(name):
    """Token dropout and sequence parallelism are optional; an LLM that offers them keeps their shapes."""
    from lrc.model.token_dropout import TokenDropout

    llm = build(LLMS, name, vocab_size=50).eval()
    if hasattr(llm, "sequence_parallel"):
        assert isinstance(llm, SequenceParallelLLM) and llm.sequence_parallel == 1
    if not hasattr(llm, "forward_with_token_dropout"):
        pytest.skip(f"llm plugin {name!r} does not offer token dropout")
    assert isinstance(llm, TokenDropoutLLM)
    ids = torch.randint(0, 50, (2, 8))
    visual = torch.zeros(2, 8, dtype=torch.bool)
    visual[:, 2:6] = True
    with torch.no_grad():
        out = llm.forward_with_token_dropout(llm.embed(ids), torch.ones(2, 8, dtype=torch.long), visual,
                                             TokenDropout(layers=[0], ratios=[0.5], mode="uniform"))
    assert out.logits.shape[:2] == out.kept.shape == out.hidden.shape[:2] and out.logits.shape[2] == 50
    assert out.hidden.shape[2] == llm.hidden_size
    assert out.kept.shape[1] < 8, "half the visual tokens are dropped before layer 0"


@pytest.mark.parametrize("name", SAMPLERS.names())
@pytest.mark.parametrize("video_frames,fps", [(1, 1.0), (7, 3.0), (300, 30.0), (9000, 15.0)])
def test_sampler_protocol(name, video_frames, fps):
    sampler = build(SAMPLERS, name, num_frames=8)
    assert isinstance(sampler, Sampler)
    idx, ts = sampler(video_frames, fps, video_frames / fps)
    idx, ts = np.asarray(idx), np.asarray(ts)
    assert idx.dtype.kind == "i" and len(idx) == len(ts) > 0
    assert idx.min() >= 0 and idx.max() < video_frames
    assert np.all(np.diff(idx) >= 0)
    assert np.allclose(ts, idx / fps)
    # the data module calls a sampler again to count a sample's tokens, and caches frames by video
    again = sampler(video_frames, fps, video_frames / fps)
    assert np.array_equal(np.asarray(again[0]), idx) and np.array_equal(np.asarray(again[1]), ts)


@pytest.mark.parametrize("name", COMPRESSORS.names())
def test_compressor_is_clip_local(name):
    """Each clip is compressed on its own: the model relies on this to stream long videos clip by clip."""
    torch.manual_seed(0)
    comp = build(COMPRESSORS, name, in_dim=64, frame_tokens=16, clip_len=2, tokens_per_frame=4).eval()
    x = torch.randn(1, 8, 16, 64)
    clip = comp.clip_len
    whole = comp(x)
    parts = torch.cat([comp(x[:, s:s + 2 * clip]) for s in range(0, 8, 2 * clip)], dim=1)
    assert torch.allclose(whole, parts, atol=1e-5)


def test_the_protocols_tell_kinds_apart():
    """isinstance checks members, so a module of another kind (or none) does not pass for a plugin."""
    plain = torch.nn.Linear(4, 4)
    assert not any(isinstance(plain, p) for p in (Encoder, Compressor, Projector, LLM, Head))
    proj = build(PROJECTORS, PROJECTORS.names()[0], in_dim=8, out_dim=8)
    assert not isinstance(proj, Compressor) and not isinstance(proj, Encoder)
    assert isinstance(lambda video_frames, fps, duration=None: None, Sampler)  # any callable: shapes are tested


def _head_targets(task, frames, size):
    """Targets in the formats of lrc/protocols.py, for the built-in tasks."""
    if task == "temporal":
        saliency = torch.zeros(frames)
        saliency[1:3] = 1
        return {"spans": torch.tensor([[1.0, 3.0]]), "saliency": saliency}
    if task == "region":
        return {"box": torch.tensor([0.2, 0.3, 0.6, 0.7]), "frame": 1}
    if task == "mask":
        masks = torch.zeros(frames, size, size, dtype=torch.bool)
        masks[:, 8:24, 10:30] = True
        boxes = torch.tensor([10 / size, 8 / size, 30 / size, 24 / size]).repeat(frames, 1)
        return {"masks": masks, "boxes": boxes, "visible": torch.ones(frames, dtype=torch.bool)}
    pytest.skip(f"no contract targets for task {task!r}; add them to _head_targets")


@pytest.mark.parametrize("name", HEADS.names())
def test_head_protocol(name):
    """Declared tokens; forward/loss/decode/metrics over a batch of two samples of different lengths;
    the loss is finite and its gradient reaches the task hidden state (the LLM learns through it)."""
    torch.manual_seed(0)
    head = build(HEADS, name, hidden_size=32, **HEAD_ARGS)
    assert isinstance(head, Head) and isinstance(head, torch.nn.Module)
    for attr in ("task", "task_token", "begin_token"):
        assert isinstance(getattr(type(head), attr), str)
    if hasattr(head, "encode_box"):  # optional: the head reads <region> boxes too
        assert isinstance(head, BoxEncodingHead)
        assert head.encode_box(torch.rand(3, 4)).shape == (3, 32)
    size, lengths = 32, (4, 6)
    hidden = torch.randn(2, 32, requires_grad=True)
    batch = HeadBatch(
        task_hidden=hidden, query_hidden=[torch.randn(5, 32), torch.randn(0, 32)],
        frame_features=[torch.randn(t, 32) for t in lengths], frames=[torch.rand(t, 3, size, size) for t in lengths],
        timestamps=[torch.arange(t, dtype=torch.float32) + 0.5 for t in lengths], durations=torch.tensor([4.0, 6.0]),
        targets=[_head_targets(head.task, t, size) for t in lengths], ids=["a", "b"])
    predictions = head(batch)
    terms = head.loss(predictions, batch)
    assert "loss" in terms and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0
    head.eval()
    with torch.no_grad():
        outputs = head.decode(head(batch), batch)
    assert len(outputs) == 2 and all(isinstance(o, dict) for o in outputs)
    metrics = head.metrics(outputs, batch.targets)
    assert metrics and all(len(v) == 2 and all(0.0 <= x <= 1.0 for x in v) for v in metrics.values())


@pytest.mark.parametrize("name", __import__("lrc.registry", fromlist=["PROMPTS"]).PROMPTS.names())
def test_prompt_format_protocol(name, corpus):
    """A prompt format: the protocol's members; one video piece more than frames; and a conversation it lays out
    encodes with the video's slots, the answer (ending with the format's end token) as the only labels, and a
    generation prompt that is the conversation's prefix up to where the answer begins."""
    from transformers import AutoTokenizer

    from lrc.data.prompt import IGNORE_INDEX, PromptBuilder, prepare_tokenizer
    from lrc.protocols import PromptFormat
    from lrc.registry import PROMPTS

    fmt = build(PROMPTS, name)
    assert isinstance(fmt, PromptFormat)
    assert len(fmt.video(3.0, 5)) == 6 and all(isinstance(p, str) for p in fmt.video(3.0, 5))
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(str(corpus / "tokenizer")), extra_tokens=fmt.special_tokens)
    prompts = PromptBuilder(tok, tokens_per_frame=3, prompt=fmt)
    conv = [{"from": "human", "value": "<video>\nWhat colour is the square?"}, {"from": "gpt", "value": "red"}]
    enc = prompts.encode_conversation(conv, duration=4.0, num_frames=2)
    assert enc.input_ids.count(prompts.img_context_id) == 6
    labelled = [t for t, l in zip(enc.input_ids, enc.labels) if l != IGNORE_INDEX]
    assert labelled == prompts.encode_piece("red", None) + [prompts.turn_end_id]
    assert tok.decode([enc.input_ids[p] for p in enc.query_positions]) == "What colour is the square?"
    gen = prompts.generation_prompt(conv[:1], duration=4.0, num_frames=2)
    assert gen.input_ids == enc.input_ids[:enc.answer_start] and gen.answer_start == enc.answer_start
