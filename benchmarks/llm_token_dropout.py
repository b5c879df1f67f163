"""HiCo level 2 (token dropout inside the LLM): forward time and peak memory versus frame count.

What. A small Qwen2-style LLM (random init from ``AutoConfig.for_model("qwen2", ...)`` and
``AutoModelForCausalLM.from_config``, SDPA attention, float32 by default) reads one sample of
``frames × tokens_per_frame`` visual tokens (16 per frame: what HiCo's ToMe hands over) placed between
``--text-before`` and ``--text-after`` text tokens. For each frame count three forwards are compared:

* ``hf``      — the plain ``transformers`` forward (``model(inputs_embeds=..., attention_mask=...)``),
  for reference;
* ``lrc``     — lrc's layer-by-layer forward, ``lrc.model.token_dropout.forward_with_token_dropout``, with the
  same drop layers but every keep ratio 1.0 (nothing dropped: its overhead over ``hf``);
* ``dropout`` — the same with the schedule (default layers [2, 4, 6], ratios [0.5, 0.25, 0.125] of the
  original visual count, mode ``uniform_then_attention``: uniform at the first drop, attention-guided
  by the last prompt token after).

Every forward computes logits for every position it keeps (as lrc does in training and
teacher-forced evaluation), so the table also gives the logits' share of the memory.

Why. HiCo's second level buys shorter sequences in the deeper layers; this shows what that buys in
time and memory as videos get longer, and what the layer-by-layer forward costs when nothing is dropped.

Time: the first forward is the memory measurement (and warm-up); then ``--repeats`` timed forwards,
under ``torch.inference_mode``; the mean is reported. Peak memory: each (frames, variant) runs in a
fresh subprocess that builds the model and the inputs, reads its resident set size (VmRSS) as the
baseline, resets the kernel's peak-RSS mark (``/proc/self/clear_refs``, Linux ≥ 4.0), runs the forward
and reads VmHWM; "peak extra" = VmHWM − baseline (what the forward needed on top of weights and inputs,
logits included). Where the reset is not allowed it falls back to ``ru_maxrss`` − baseline (an upper
bound). Figures come from a shared 2-core CPU: indicative.

    python benchmarks/llm_token_dropout.py                     # 16..256 frames
    python benchmarks/llm_token_dropout.py --quick             # tiny model, 2 frame counts
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

VARIANTS = ("hf", "lrc", "dropout")


from _memory import (max_rss_kib as _max_rss_kib, peak_kib as _peak_kib, reset_peak as _reset_peak,  # noqa: E402
                     status_kib as _status_kib)


# -- the model and one sample ---------------------------------------------------------------------
def build_model(args: argparse.Namespace) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "qwen2", hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, intermediate_size=args.intermediate, vocab_size=args.vocab,
        max_position_embeddings=max(32768, args.max_positions))
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=getattr(torch, args.dtype)).eval()


def sample(frames: int, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[1, L, hidden] embeddings: text_before, frames·tokens_per_frame visual tokens, text_after."""
    n_vis = frames * args.tokens_per_frame
    length = args.text_before + n_vis + args.text_after
    g = torch.Generator().manual_seed(frames)
    embeds = (0.02 * torch.randn(1, length, args.hidden, generator=g)).to(getattr(torch, args.dtype))
    attention_mask = torch.ones(1, length, dtype=torch.long)
    visual_mask = torch.zeros(1, length, dtype=torch.bool)
    visual_mask[0, args.text_before:args.text_before + n_vis] = True
    return embeds, attention_mask, visual_mask


def make_forward(variant: str, model, embeds, attention_mask, visual_mask, args):
    from lrc.model.token_dropout import TokenDropout, forward_with_token_dropout

    if variant == "hf":
        return lambda: model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).logits
    ratios = args.ratios if variant == "dropout" else [1.0] * len(args.ratios)
    schedule = TokenDropout(layers=args.drop_layers, ratios=ratios, mode=args.mode)
    problems = schedule.problems(args.layers)
    if problems:
        raise SystemExit("token dropout schedule: " + "; ".join(problems))
    return lambda: forward_with_token_dropout(model, embeds, attention_mask, visual_mask, schedule).logits


# -- one (frames, variant) in this process ------------------------------------------------------
def worker(args: argparse.Namespace) -> dict:
    frames, variant = args.worker_frames, args.worker_variant
    model = build_model(args)
    embeds, attention_mask, visual_mask = sample(frames, args)
    forward = make_forward(variant, model, embeds, attention_mask, visual_mask, args)

    base_kib = _status_kib("VmRSS") or _max_rss_kib()
    reset_ok = _reset_peak()
    with torch.inference_mode():
        logits = forward()  # measured cold forward, also the warm-up
    peak_kib = _peak_kib(reset_ok)
    out_len = logits.shape[1]
    logits_mib = logits.numel() * logits.element_size() / 2**20
    del logits

    times = []
    with torch.inference_mode():
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            forward()
            times.append(time.perf_counter() - t0)
    return dict(frames=frames, variant=variant, seq_in=embeds.shape[1], seq_out=out_len,
                ms=1e3 * sum(times) / len(times), extra_mib=(peak_kib - base_kib) / 1024, logits_mib=logits_mib,
                memory_method="VmHWM reset" if reset_ok else "ru_maxrss (upper bound)")


# -- driver -------------------------------------------------------------------------------------
# the sizes a worker needs, passed on explicitly
WORKER_FLAGS = ("tokens_per_frame", "text_before", "text_after", "hidden", "layers", "heads", "kv_heads",
                "intermediate", "vocab", "dtype", "drop_layers", "ratios", "mode", "repeats")


def run_one(frames: int, variant: str, args: argparse.Namespace) -> dict:
    flags = []
    for name in WORKER_FLAGS:
        value = getattr(args, name)
        value = ",".join(str(v) for v in value) if isinstance(value, list) else value
        flags.append(f"--{name.replace('_', '-')}={value}")
    cmd = [sys.executable, os.path.abspath(__file__), *flags, f"--worker-frames={frames}", f"--worker-variant={variant}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return dict(frames=frames, variant=variant, error=(proc.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict], args: argparse.Namespace) -> str:
    params = sum(p.numel() for p in build_model(args).parameters())
    lines = [
        f"Qwen2-style LLM: hidden {args.hidden}, {args.layers} layers, {args.heads} heads / {args.kv_heads} KV heads, "
        f"intermediate {args.intermediate}, vocab {args.vocab} ({params / 1e6:.1f} M params), {args.dtype}, SDPA; "
        f"{args.tokens_per_frame} tokens per frame + {args.text_before + args.text_after} text tokens; "
        f"dropout = layers {args.drop_layers}, ratios {args.ratios}, {args.mode}; "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}.",
        "",
        "| frames | variant | seq in | seq out (logits) | ms / forward | vs hf | peak extra MiB | logits MiB |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    hf_ms = {r["frames"]: r["ms"] for r in rows if r.get("variant") == "hf" and "ms" in r}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['frames']} | {r['variant']} | error: {r['error']} | | | | | |")
            continue
        rel = f"{r['ms'] / hf_ms[r['frames']]:.2f}×" if r["frames"] in hf_ms else ""
        mark = "" if r["memory_method"] == "VmHWM reset" else " *"
        lines.append(f"| {r['frames']} | {r['variant']} | {r['seq_in']} | {r['seq_out']} | {r['ms']:.0f} | {rel} | "
                     f"{r['extra_mib']:.0f}{mark} | {r['logits_mib']:.0f} |")
    if any(r.get("memory_method", "VmHWM reset") != "VmHWM reset" for r in rows):
        lines.append("\n\\* ru_maxrss − baseline (peak-RSS reset unavailable): an upper bound.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", default="16,32,64,128,256", help="comma-separated frame counts")
    p.add_argument("--tokens-per-frame", type=int, default=16, help="visual tokens per frame (HiCo ToMe: 16)")
    p.add_argument("--text-before", type=int, default=16, help="text tokens before the video")
    p.add_argument("--text-after", type=int, default=48, help="text tokens after the video (the question)")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=1408)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--drop-layers", default="2,4,6", help="decoder layers before which ratios apply")
    p.add_argument("--ratios", default="0.5,0.25,0.125", help="kept fraction of the original visual tokens")
    p.add_argument("--mode", default="uniform_then_attention", choices=["uniform", "attention", "uniform_then_attention"])
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of hf, lrc, dropout")
    p.add_argument("--repeats", type=int, default=2, help="timed forwards after the measured one")
    p.add_argument("--quick", action="store_true", help="tiny model and two frame counts, for a smoke run")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--worker-frames", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-variant", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        for k, v in dict(frames="8,16", hidden=64, layers=4, heads=4, kv_heads=2, intermediate=128, vocab=1000,
                         drop_layers="1,2,3", repeats=1).items():
            setattr(args, k, v)
    args.drop_layers = [int(x) for x in str(args.drop_layers).split(",")]
    args.ratios = [float(x) for x in str(args.ratios).split(",")]
    frames = [int(x) for x in str(args.frames).split(",")]
    args.max_positions = args.text_before + max(frames + [args.worker_frames or 0]) * args.tokens_per_frame + args.text_after

    if args.worker_variant:
        print(json.dumps(worker(args)))
        return
    rows = []
    for n in frames:
        for variant in args.variants.split(","):
            print(f"... {n} frames, {variant}", file=sys.stderr, flush=True)
            rows.append(run_one(n, variant, args))
    print(table(rows, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
