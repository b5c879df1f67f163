"""How many frames fit under an activation-memory cap, with and without HiCo compression.

What. The largest frame count T (a multiple of ``clip_len``) for which one forward of lrc's video
pipeline needs at most ``--cap-gib`` of activation memory (weights excluded), for three settings:

* ``none``           — 256 tokens per frame: the pixel-shuffled encoder tokens go straight to the
  projector and the LLM (the ``tome`` compressor with ``tokens_per_frame = 256``, which is the identity);
* ``tome``           — HiCo level 1: each 4-frame clip merged 1024 → 64 tokens (16 per frame);
* ``tome+dropout``   — HiCo levels 1 + 2: the same, plus visual-token dropout inside the LLM
  (default layers [1, 2, 3] of the 4-layer model, ratios [0.5, 0.25, 0.125], uniform then attention).

The pipeline is lrc's own ``VideoMLLM`` (``lrc/model/mllm.py``): encoder → compressor → ``mlp`` projector,
streamed ``--chunk-frames`` frames (whole clips) at a time as ``VideoMLLM.encode_video`` does (64 by default) → written into the ``<IMG_CONTEXT>`` slots of a prompt with
``--text-tokens`` text tokens → ``hf_causal_lm`` (Qwen2-style, random init), plain forward or
``forward_with_token_dropout``; logits for every kept position, as lrc computes them in training and
teacher-forced evaluation. The vision encoder is replaced by a stub that returns random
``[chunk, 256, 4096]`` features (InternVL2.5-8B's pixel-shuffled InternViT output): the encoder's own
activations are NOT counted (they come on top, for one chunk of frames at a time).

Two answers per setting:

* analytic — a closed-form estimate of the peak (see ``analytic_peak``: the largest tensors alive at
  the peak of each stage), solved for T; given for the measured small LLM and, for scale, for a
  7B-class LLM (``--big-*`` flags; defaults: hidden 4096, 32 layers, intermediate 14336, vocab 92,544,
  bf16 — the dimensions of InternLM2.5-7B, the LLM of InternVL2.5-8B);
* measured — a search over T with real forwards of the small LLM: each probe runs in a fresh
  subprocess that builds the model and the batch, reads its resident set size (VmRSS) as the baseline,
  resets the kernel's peak-RSS mark (``/proc/self/clear_refs``, Linux ≥ 4.0), runs the forward under
  ``torch.inference_mode`` and reads VmHWM; a probe fits if VmHWM − baseline ≤ cap (where the reset
  is not allowed: ``ru_maxrss`` − baseline, an upper bound). The search starts at the analytic answer,
  steps out until it has a fitting and a failing T, then bisects until they are within
  ``--tolerance`` (relative, and at least one clip) of each other.

The headline is the ratio of each setting's frame count to ``none``'s under the same cap, measured
(small width) and analytic (7B-class shape). A last, analytic-only column is the whole video encoded in
one pass (``--chunk-frames`` = T: lrc before it streamed), which shows what streaming buys.

Why. The point of HiCo is to fit long videos: this puts a number of frames on it, and shows which
stage binds. Figures come from a shared 2-core CPU and glibc's allocator: indicative.

    python benchmarks/frames_under_memory_cap.py                  # cap 4 GiB, --json PATH keeps the rows
    python benchmarks/frames_under_memory_cap.py --cap-gib 2 --analytic-only
    python benchmarks/frames_under_memory_cap.py --quick          # tiny cap and model, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

BENCHMARK = "frames_under_memory_cap"
SETTINGS = ("none", "tome", "tome+dropout")
GiB = 2**30


from _common import add_output_args, read_json, write_json  # noqa: E402
from _memory import (max_rss_kib as _max_rss_kib, peak_kib as _peak_kib, reset_peak as _reset_peak,  # noqa: E402
                     status_kib as _status_kib)


# -- the sizes ----------------------------------------------------------------------------------
@dataclass
class Sizes:
    frame_tokens: int  # encoder tokens per frame after pixel shuffle (256)
    feat_dim: int  # their dim (4096)
    clip_len: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    text_tokens: int
    dtype: str
    drop_layers: list[int]
    ratios: list[float]
    chunk_frames: int  # frames per encoder/compressor/projector pass (VideoMLLM.chunk_frames)
    mlp_chunk: int | None  # positions per piece of a decoder MLP without gradients (hf_causal_lm); None: whole

    @property
    def bytes(self) -> int:
        return torch.empty(0, dtype=getattr(torch, self.dtype)).element_size()


def tokens_per_frame(setting: str, s: Sizes, compressed: int) -> int:
    return s.frame_tokens if setting == "none" else compressed


# -- analytic estimate --------------------------------------------------------------------------
def analytic_peak(setting: str, frames: int, s: Sizes, compressed: int, streamed: bool = True) -> tuple[float, str]:
    """Estimated peak activation bytes of one forward, and the stage where it happens.

    b = bytes per element, C = frames per visual pass (``s.chunk_frames`` when ``streamed``, else all T),
    F = C·frame_tokens·feat_dim·b (one pass's encoder output), N = visual tokens reaching the LLM,
    L0 = N + text tokens.

    * stage 1, visual (``encode_video``): one pass's F is alive, and the projected tokens of the passes
      before it (N·hidden·b at most).
      - none: the projector's LayerNorm output (F) and first Linear (C·256·hidden·b) on top.
      - tome: the first bipartite merge step (1024 → 512) holds the size-weighted copy (F), the B
        half after scatter_add (F/2), the concatenated result (F/2) and its division by the sizes
        (F/2): F + 2.5·F in the input dtype (float16 merges in float32: F + 2.5·F32).
    * stage 2, LLM: the prompt embeddings (L0·hidden·b) stay alive; a decoder layer on L tokens peaks
      in its MLP: act(gate), up and their product (3·P·intermediate, P = min(L, the MLP's piece,
      ``mlp_chunk``; L when it runs whole) plus ~3 hidden-size tensors (3·L·hidden); the final norm and
      logits over the L_f kept positions: L_f·(vocab + 2·hidden). With dropout, layer l sees the text
      tokens plus ratio_l·N visual tokens.

    Attention is SDPA's fused kernel (no L×L matrix) and is smaller than the MLP; allocator slack,
    library workspaces and the small per-layer tensors are ignored.

    ``streamed=False`` is lrc before ``encode_video`` streamed: the whole video in one visual pass.
    """
    b = s.bytes
    k = tokens_per_frame(setting, s, compressed)
    n = frames * k
    l0 = n + s.text_tokens
    chunk = min(frames, max(s.clip_len, s.chunk_frames // s.clip_len * s.clip_len)) if streamed else frames
    feats = chunk * s.frame_tokens * s.feat_dim * b
    work = feats * (4 / b if s.dtype == "float16" else 1)
    if setting == "none":
        stage1 = 2 * feats + chunk * k * s.hidden * b
    else:
        stage1 = feats + 2.5 * work
    stage1 += n * s.hidden * b

    lengths = []  # sequence length seen by each decoder layer
    keep = 1.0
    for layer in range(s.layers):
        if setting == "tome+dropout" and layer in s.drop_layers:
            keep = s.ratios[s.drop_layers.index(layer)]
        lengths.append(s.text_tokens + round(keep * n))
    piece = lambda length: length if s.mlp_chunk is None else min(length, s.mlp_chunk)
    layer_peak = max(3 * piece(length) * s.intermediate + 3 * length * s.hidden for length in lengths)
    logits = lengths[-1] * (s.vocab + 2 * s.hidden)
    stage2 = b * (l0 * s.hidden + max(layer_peak, logits))
    where = "visual" if stage1 >= stage2 else ("LLM layers" if layer_peak >= logits else "logits")
    return max(stage1, stage2), where


def analytic_max_frames(setting: str, s: Sizes, compressed: int, cap: float, limit: int,
                        streamed: bool = True) -> tuple[int, str]:
    """Largest multiple of clip_len (≤ limit) whose estimate fits under cap; the binding stage there."""
    lo, hi = 0, limit // s.clip_len  # in clips
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if analytic_peak(setting, mid * s.clip_len, s, compressed, streamed)[0] <= cap:
            lo = mid
        else:
            hi = mid - 1
    frames = lo * s.clip_len
    return frames, analytic_peak(setting, max(frames, s.clip_len) + s.clip_len, s, compressed, streamed)[1]


# -- the real pipeline (one probe, in a worker subprocess) --------------------------------------
class FeatureStub(nn.Module):
    """Stands in for InternViT + pixel shuffle: ``[T, 3, S, S]`` frames → random ``[T, M, D]`` features."""

    def __init__(self, num_tokens: int, out_dim: int, dtype: torch.dtype):
        super().__init__()
        self.num_tokens, self.out_dim, self.dtype = num_tokens, out_dim, dtype
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # so the module has a parameter

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return torch.randn(pixel_values.shape[0], self.num_tokens, self.out_dim, generator=g).to(self.dtype)


def build_pipeline(setting: str, s: Sizes, compressed: int):
    from lrc.model.mllm import VideoMLLM
    from lrc.registry import COMPRESSORS, LLMS, PROJECTORS
    from lrc.model.token_dropout import TokenDropout

    torch.manual_seed(0)
    dtype = getattr(torch, s.dtype)
    encoder = FeatureStub(s.frame_tokens, s.feat_dim, dtype)
    compressor = COMPRESSORS.get("tome")(in_dim=s.feat_dim, clip_len=s.clip_len,
                                         tokens_per_frame=tokens_per_frame(setting, s, compressed))
    projector = PROJECTORS.get("mlp")(in_dim=s.feat_dim, out_dim=s.hidden)
    llm = LLMS.get("hf_causal_lm")(vocab_size=s.vocab, dtype=s.dtype, config=dict(
        model_type="qwen2", hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads, intermediate_size=s.intermediate, max_position_embeddings=1 << 20),
        mlp_chunk_positions=s.mlp_chunk)
    dropout = (TokenDropout(layers=s.drop_layers, ratios=s.ratios, mode="uniform_then_attention")
               if setting == "tome+dropout" else None)
    model = VideoMLLM(encoder, compressor, projector.to(dtype), llm, img_context_id=s.vocab - 1, token_dropout=dropout)
    model.chunk_frames = s.chunk_frames
    return model.eval()


def build_batch(setting: str, frames: int, s: Sizes, compressed: int, answer: int = 8) -> dict:
    """One sample: half the text before the video, the rest (question, then an answer) after."""
    n = frames * tokens_per_frame(setting, s, compressed)
    before = s.text_tokens // 2
    after = s.text_tokens - before
    g = torch.Generator().manual_seed(1)
    text = torch.randint(0, s.vocab - 1, (s.text_tokens,), generator=g)
    ids = torch.cat([text[:before], torch.full((n,), s.vocab - 1), text[before:]])[None]
    labels = torch.full_like(ids, -100)
    labels[0, -answer:] = ids[0, -answer:]
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels,
                answer_start=torch.tensor([ids.shape[1] - answer]), frames_per_sample=[frames],
                pixel_values=torch.zeros(frames, 3, 1, 1))


def probe(setting: str, frames: int, s: Sizes, compressed: int) -> dict:
    model = build_pipeline(setting, s, compressed)
    batch = build_batch(setting, frames, s, compressed)
    base_kib = _status_kib("VmRSS") or _max_rss_kib()
    reset_ok = _reset_peak()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model(batch)
    seconds = time.perf_counter() - t0
    peak_kib = _peak_kib(reset_ok)
    return dict(setting=setting, frames=frames, seq=batch["input_ids"].shape[1], logits=out.logits.shape[1],
                extra_gib=(peak_kib - base_kib) / 2**20, seconds=seconds,
                memory_method="VmHWM reset" if reset_ok else "ru_maxrss (upper bound)")


# -- the measured search (driver) ---------------------------------------------------------------
def run_probe(setting: str, frames: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *args.worker_flags,
           f"--worker-setting={setting}", f"--worker-frames={frames}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:  # e.g. killed for memory: it does not fit
        return dict(setting=setting, frames=frames, extra_gib=float("inf"), seconds=float("nan"),
                    error=(proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measured_max_frames(setting: str, start: int, s: Sizes, args: argparse.Namespace, cap: float) -> dict:
    """Step out from ``start`` to a fitting and a failing T, then bisect to within the tolerance."""
    step = s.clip_len
    snap = lambda t: max(step, min(args.max_frames, int(round(t / step)) * step))
    probes: list[dict] = []

    def fits(t: int) -> bool:
        r = run_probe(setting, t, args)
        probes.append(r)
        ok = r["extra_gib"] * GiB <= cap
        print(f"    {setting}: T={t} extra {r['extra_gib']:.2f} GiB in {r['seconds']:.1f} s -> "
              f"{'fits' if ok else 'over'}", file=sys.stderr, flush=True)
        return ok

    lo, hi = None, None  # largest T known to fit, smallest T known not to
    t = snap(start)
    while lo is None or hi is None:
        if fits(t):
            lo = t
            if t >= args.max_frames:
                break
            t = snap(max(t * (1 + 2 * args.tolerance), t + step))
        else:
            hi = t
            if t <= step:
                lo = 0
                break
            t = snap(min(t / (1 + 2 * args.tolerance), t - step))
        if lo is not None and hi is not None and lo >= hi:  # cannot happen with a monotone peak
            break
    while lo is not None and hi is not None and hi - lo > max(step, args.tolerance * lo):
        mid = snap((lo + hi) / 2)
        if mid in (lo, hi):
            break
        if fits(mid):
            lo = mid
        else:
            hi = mid
    at_lo = next((p for p in probes if p["frames"] == lo), None)
    return dict(fits=lo, fails=hi, probes=len(probes), extra_gib=at_lo["extra_gib"] if at_lo else float("nan"),
                seconds=sum(p["seconds"] for p in probes if p["seconds"] == p["seconds"]))


# -- output -------------------------------------------------------------------------------------
def describe(s: Sizes) -> str:
    mlp = "whole" if s.mlp_chunk is None else f"in pieces of {s.mlp_chunk:,} positions"
    return (f"hidden {s.hidden}, {s.layers} layers, {s.heads}/{s.kv_heads} heads, intermediate {s.intermediate}, "
            f"vocab {s.vocab:,}, {s.dtype}, MLP {mlp}")


def table(result: dict) -> str:
    """The Markdown of a result (``--from-json`` prints it again from the file)."""
    ratio = lambda x: "—" if x is None else f"{x:.1f}×"
    lines = [result["about"] + "\n",
             "| setting | tokens/frame | small LLM: analytic max frames (binds at) | small LLM: measured max frames "
             "| peak at that T (GiB) | probes (s) | × none, measured | 7B-class: analytic max frames (binds at) "
             "| × none, 7B-class | 7B-class, MLP whole: max frames (× none) "
             "| whole video in one pass: small / 7B-class (analytic) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        m = r.get("measured")
        if m is None:
            measured, peak, cost = "—", "—", "—"
        else:
            upper = f" (< {m['fails']})" if m["fails"] is not None else f" (≥, search limit {result['max_frames']})"
            measured = f"{m['fits']}{upper}"
            peak, cost = f"{m['extra_gib']:.2f}", f"{m['probes']} ({m['seconds']:.0f})"
        lines.append(
            f"| {r['setting']} | {r['tokens_per_frame']} | {r['analytic']} ({r['binds']}) | {measured} | {peak} | "
            f"{cost} | {ratio(r['measured_ratio'])} | {r['big']} ({r['big_binds']}) | {ratio(r['big_ratio'])} | "
            f"{r['big_mlp_whole']} ({ratio(r['big_mlp_whole_ratio'])}) | "
            f"{r['whole']} ({r['whole_binds']}) / {r['big_whole']} ({r['big_whole_binds']}) |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cap-gib", type=float, default=4.0, help="activation memory cap in GiB (default 4)")
    p.add_argument("--frame-tokens", type=int, default=256, help="encoder tokens per frame (InternVL2.5-8B: 256)")
    p.add_argument("--feat-dim", type=int, default=4096, help="their dim after pixel shuffle (4096)")
    p.add_argument("--clip-len", type=int, default=4)
    p.add_argument("--tokens-per-frame", type=int, default=16, help="after ToMe (HiCo: 16)")
    p.add_argument("--text-tokens", type=int, default=64)
    p.add_argument("--chunk-frames", type=int, default=64, help="frames per visual pass (VideoMLLM.chunk_frames)")
    p.add_argument("--mlp-chunk-positions", type=int, default=4096,
                   help="positions per piece of a decoder MLP (hf_causal_lm's mlp_chunk_positions); 0: whole")
    # the measured (small) LLM
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=704)
    p.add_argument("--vocab", type=int, default=92544, help="InternLM2.5's; logits are computed at every position")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--drop-layers", default="1,2,3")
    p.add_argument("--ratios", default="0.5,0.25,0.125")
    # the 7B-class LLM, analytic only
    p.add_argument("--big-hidden", type=int, default=4096)
    p.add_argument("--big-layers", type=int, default=32)
    p.add_argument("--big-intermediate", type=int, default=14336)
    p.add_argument("--big-vocab", type=int, default=92544)
    p.add_argument("--big-dtype", default="bfloat16", choices=["float32", "bfloat16"])
    p.add_argument("--big-drop-layers", default="8,16,24")
    # the search
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset of none, tome, tome+dropout")
    p.add_argument("--tolerance", type=float, default=0.05, help="stop when fitting/failing T are this close (relative)")
    p.add_argument("--max-frames", type=int, default=16384, help="upper end of the search")
    p.add_argument("--analytic-only", action="store_true", help="skip the measured search")
    p.add_argument("--quick", action="store_true", help="cap 0.25 GiB, tiny model, coarse search")
    add_output_args(p)
    p.add_argument("--worker-setting", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-frames", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.from_json:
        print(table(read_json(args.from_json, BENCHMARK)))
        return
    if args.quick:
        for k, v in dict(cap_gib=0.25, feat_dim=1024, hidden=64, layers=4, heads=4, kv_heads=2, intermediate=128,
                         vocab=8192, tolerance=0.25, max_frames=2048, chunk_frames=16).items():
            setattr(args, k, v)

    ints = lambda text: [int(x) for x in text.split(",")]
    mlp_chunk = args.mlp_chunk_positions or None
    small = Sizes(args.frame_tokens, args.feat_dim, args.clip_len, args.hidden, args.layers, args.heads, args.kv_heads,
                  args.intermediate, args.vocab, args.text_tokens, args.dtype, ints(args.drop_layers),
                  [float(x) for x in args.ratios.split(",")], args.chunk_frames, mlp_chunk)
    if args.worker_setting:
        print(json.dumps(probe(args.worker_setting, args.worker_frames, small, args.tokens_per_frame)))
        return
    big = Sizes(args.frame_tokens, args.feat_dim, args.clip_len, args.big_hidden, args.big_layers, 32, 8,
                args.big_intermediate, args.big_vocab, args.text_tokens, args.big_dtype, ints(args.big_drop_layers),
                small.ratios, args.chunk_frames, mlp_chunk)
    big_mlp_whole = dataclasses.replace(big, mlp_chunk=None)  # what chunking the MLP buys, for the table
    # what a worker needs to rebuild `small`
    args.worker_flags = [f"--{k}={getattr(args, k.replace('-', '_'))}" for k in (
        "frame-tokens", "feat-dim", "clip-len", "tokens-per-frame", "text-tokens", "chunk-frames", "mlp-chunk-positions",
        "hidden", "layers", "heads", "kv-heads", "intermediate", "vocab", "dtype", "drop-layers", "ratios")]
    cap = args.cap_gib * GiB
    k = args.tokens_per_frame

    rows = []
    for setting in args.settings.split(","):
        a_small, where_small = analytic_max_frames(setting, small, k, cap, args.max_frames)
        a_big, where_big = analytic_max_frames(setting, big, k, cap, 1 << 20)
        a_whole_mlp, _ = analytic_max_frames(setting, big_mlp_whole, k, cap, 1 << 20)
        w_small, w_where_small = analytic_max_frames(setting, small, k, cap, 1 << 20, streamed=False)
        w_big, w_where_big = analytic_max_frames(setting, big, k, cap, 1 << 20, streamed=False)
        row = dict(setting=setting, tokens_per_frame=tokens_per_frame(setting, small, k),
                   analytic=a_small, binds=where_small, big=a_big, big_binds=where_big, big_mlp_whole=a_whole_mlp,
                   whole=w_small, whole_binds=w_where_small, big_whole=w_big, big_whole_binds=w_where_big)
        if not args.analytic_only:
            print(f"... {setting}: analytic {a_small} frames; searching", file=sys.stderr, flush=True)
            row["measured"] = measured_max_frames(setting, max(a_small, args.clip_len), small, args, cap)
        rows.append(row)
    none = next((r for r in rows if r["setting"] == "none"), None)
    for r in rows:  # frames relative to no compression under the same cap
        r["big_ratio"] = r["big"] / none["big"] if none and none["big"] else None
        r["big_mlp_whole_ratio"] = (r["big_mlp_whole"] / none["big_mlp_whole"]
                                    if none and none["big_mlp_whole"] else None)
        m, m0 = r.get("measured"), none.get("measured") if none else None
        r["measured_ratio"] = m["fits"] / m0["fits"] if m and m0 and m0["fits"] else None

    about = (f"Cap {args.cap_gib:g} GiB of activations (weights excluded), one sample, {args.text_tokens} text tokens, "
             f"encoder output {args.frame_tokens} × {args.feat_dim} per frame, {args.chunk_frames} frames per visual "
             f"pass; measured LLM: {describe(small)}; 7B-class LLM (analytic): {describe(big)}; dropout ratios "
             f"{small.ratios} at layers {small.drop_layers} (7B: {big.drop_layers}); {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}; load average {os.getloadavg()[0]:.2f} at the end; {datetime.date.today()}.")
    result = dict(about=about, max_frames=args.max_frames, rows=rows)
    print(table(result))
    if args.json:
        write_json(args.json, BENCHMARK, result)


if __name__ == "__main__":
    main()
