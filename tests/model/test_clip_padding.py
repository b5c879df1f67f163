"""Frame counts that are not a multiple of the compressor's clip_len (images, several images, short clips):
every registered compressor gives exactly T·k tokens per sample, the padding never changes the whole clips,
and images are compressed one by one (docs/data.md, "Images")."""

import inspect

import pytest
import torch

from lrc.model.mllm import VideoMLLM
from lrc.registry import COMPRESSORS, ENCODERS, LLMS, PROJECTORS

K = 4  # tokens per frame asked of compressors that take it (mlp derives 4 from its 16-token grid)


def _build(registry, name, **args):
    cls = registry.get(name)
    params = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in args.items() if k in params})


def _model(compressor: str, clip_len: int) -> VideoMLLM:
    torch.manual_seed(0)
    encoder = _build(ENCODERS, "timm_vit", image_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=4)
    comp = _build(COMPRESSORS, compressor, in_dim=encoder.out_dim, frame_tokens=encoder.num_tokens, clip_len=clip_len,
                  tokens_per_frame=K)
    llm = _build(LLMS, "hf_causal_lm", vocab_size=32, config=dict(model_type="qwen2", hidden_size=64,
                 intermediate_size=128, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2))
    projector = _build(PROJECTORS, "mlp", in_dim=comp.out_dim, out_dim=llm.hidden_size)
    return VideoMLLM(encoder, comp, projector, llm, img_context_id=3).eval()


@pytest.fixture(scope="module", params=COMPRESSORS.names())
def compressor(request):
    return request.param


@pytest.mark.parametrize("clip_len", [1, 2, 4])
def test_every_frame_count_gets_t_times_k_tokens(compressor, clip_len):
    model = _model(compressor, clip_len)
    k = model.tokens_per_frame
    counts = list(range(1, 2 * clip_len + 2))
    pixels = torch.randn(sum(counts), 3, 32, 32)
    with torch.no_grad():
        videos = model.encode_video(pixels, counts)
        images = model.encode_video(pixels, counts, ["image"] * len(counts))
    for t, v, i in zip(counts, videos, images):
        assert v.shape == (t * k, model.projector.out_dim), (compressor, clip_len, t)
        assert i.shape == (t * k, model.projector.out_dim), (compressor, clip_len, t)


@pytest.mark.parametrize("clip_len", [2, 4])
def test_padding_leaves_the_whole_clips_alone(compressor, clip_len):
    # T = 2 clips + 1 frame: the two whole clips give the tokens they give without the extra frame
    model = _model(compressor, clip_len)
    k = model.tokens_per_frame
    pixels = torch.randn(2 * clip_len + 1, 3, 32, 32)
    with torch.no_grad():
        padded = model.encode_video(pixels, [2 * clip_len + 1])[0]
        whole = model.encode_video(pixels[:2 * clip_len], [2 * clip_len])[0]
        last_alone = model.encode_video(pixels[-1:].expand(clip_len, -1, -1, -1), [clip_len])[0]
    assert torch.allclose(padded[:2 * clip_len * k], whole, atol=1e-5)
    # the last frame's clip is that frame repeated: its tokens are that clip's first k
    assert torch.allclose(padded[2 * clip_len * k:], last_alone[:k], atol=1e-5)


def test_images_are_compressed_one_by_one_and_batch_with_videos(compressor):
    model = _model(compressor, 4)
    k = model.tokens_per_frame
    torch.manual_seed(1)
    a, b, video = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32), torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        mixed = model.encode_video(torch.cat([a, b, video, b]), [2, 4, 1], ["image", "video", "image"])
        alone_a = model.encode_video(a, [1], ["image"])[0]
        alone_b = model.encode_video(b, [1], ["image"])[0]
        alone_video = model.encode_video(video, [4])[0]
    assert [m.shape[0] for m in mixed] == [2 * k, 4 * k, k]
    assert torch.allclose(mixed[0], torch.cat([alone_a, alone_b]), atol=1e-5)  # neither image sees the other
    assert torch.allclose(mixed[1], alone_video, atol=1e-5)
    assert torch.allclose(mixed[2], alone_b, atol=1e-5)


def test_gradients_reach_the_frames_through_the_padding():
    model = _model("tome", 4).train()
    pixels = torch.randn(3, 3, 32, 32, requires_grad=True)
    out = model.encode_video(pixels, [3])[0]
    out.sum().backward()
    assert pixels.grad is not None and bool((pixels.grad.abs().sum(dim=(1, 2, 3)) > 0).all())
