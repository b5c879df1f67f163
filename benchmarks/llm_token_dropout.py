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

Time. One model in this process; for each frame count the three forwards run interleaved
(benchmarks/_common.py: one warm-up round, then ``--repeats`` rounds each running every variant once, the
order rotating), under ``torch.inference_mode``: the median time of each and the median of the
per-repetition ratios to ``hf``, with the load average before and after. Peak memory: each (frames,
variant) runs in a fresh subprocess that builds the model and the inputs, reads its resident set size
(VmRSS) as the baseline, resets the kernel's peak-RSS mark (``/proc/self/clear_refs``, Linux ≥ 4.0),
runs the forward and reads VmHWM; "peak extra" = VmHWM − baseline (what the forward needed on top of
weights and inputs, logits included). Where the reset is not allowed it falls back to ``ru_maxrss`` −
baseline (an upper bound). Figures come from a shared 2-core CPU: read the ratios.

    python benchmarks/llm_token_dropout.py                     # 16..256 frames
    python benchmarks/llm_token_dropout.py --quick             # tiny model, 2 frame counts
    python benchmarks/llm_token_dropout.py --json t.json       # keep the results; --from-json t.json prints them
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import torch

from _common import (add_output_args, describe_run, machine, markdown_table, median_ratio, paired, read_json,
                     write_json)
from _memory import (max_rss_kib as _max_rss_kib, peak_kib as _peak_kib, reset_peak as _reset_peak,
                     status_kib as _status_kib)

BENCHMARK = "llm_token_dropout"
VARIANTS = ("hf", "lrc", "dropout")


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


# -- peak memory of one (frames, variant), in a fresh process ----------------------------------
def memory_worker(args: argparse.Namespace) -> dict:
    model = build_model(args)
    embeds, attention_mask, visual_mask = sample(args.worker_frames, args)
    forward = make_forward(args.worker_variant, model, embeds, attention_mask, visual_mask, args)

    base_kib = _status_kib("VmRSS") or _max_rss_kib()
    reset_ok = _reset_peak()
    with torch.inference_mode():
        logits = forward()  # the measured (cold) forward
    peak_kib = _peak_kib(reset_ok)
    return dict(extra_mib=(peak_kib - base_kib) / 1024, logits_mib=logits.numel() * logits.element_size() / 2**20,
                memory_method="VmHWM reset" if reset_ok else "ru_maxrss (upper bound)")


# -- driver -------------------------------------------------------------------------------------
# the sizes a worker needs, passed on explicitly
WORKER_FLAGS = ("tokens_per_frame", "text_before", "text_after", "hidden", "layers", "heads", "kv_heads",
                "intermediate", "vocab", "dtype", "drop_layers", "ratios", "mode")


def run_memory(frames: int, variant: str, args: argparse.Namespace) -> dict:
    flags = []
    for name in WORKER_FLAGS:
        value = getattr(args, name)
        value = ",".join(str(v) for v in value) if isinstance(value, list) else value
        flags.append(f"--{name.replace('_', '-')}={value}")
    cmd = [sys.executable, os.path.abspath(__file__), *flags, f"--worker-frames={frames}",
           f"--worker-variant={variant}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return dict(error=(proc.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(frames: list[int], variants: list[str], args: argparse.Namespace) -> dict:
    """Per frame count, the variants timed paired in this process; then each one's peak memory in a subprocess."""
    model = build_model(args)
    rows, seconds, loads = [], {}, []
    for n in frames:
        embeds, attention_mask, visual_mask = sample(n, args)
        forwards = {v: make_forward(v, model, embeds, attention_mask, visual_mask, args) for v in variants}
        with torch.inference_mode():
            kept = {v: forward().shape[1] for v, forward in forwards.items()}
            print(f"... {n} frames: timing {', '.join(variants)}, {args.repeats} paired repetitions", file=sys.stderr,
                  flush=True)
            times, load = paired(forwards, args.repeats)
        loads.append(load)
        for v in variants:
            row = dict(frames=n, variant=v, seq_in=embeds.shape[1], seq_out=kept[v],
                       ms=round(1e3 * statistics.median(times[v]), 1))
            if "hf" in times:
                row["ratio_to_hf"] = round(median_ratio(times[v], times["hf"]), 3)
            rows.append(row)
            seconds[f"{n} {v}"] = [round(t, 4) for t in times[v]]
    for row in rows:
        print(f"... peak memory: {row['frames']} frames, {row['variant']}", file=sys.stderr, flush=True)
        row.update(run_memory(row["frames"], row["variant"], args))
    setup = {k: getattr(args, k) for k in ("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab", "dtype",
                                           "tokens_per_frame", "text_before", "text_after", "drop_layers", "ratios",
                                           "mode")}
    setup["params"] = sum(p.numel() for p in model.parameters())
    # the load before the first frame count and after the last
    return {"setup": setup, "machine": machine([loads[0][0], loads[-1][1]], args.repeats), "rows": rows,
            "seconds": seconds}


def table(result: dict) -> str:
    """The Markdown of a result (what --json writes): a function of it alone."""
    s, m = result["setup"], result["machine"]
    lines = [
        f"Qwen2-style LLM: hidden {s['hidden']}, {s['layers']} layers, {s['heads']} heads / {s['kv_heads']} KV heads, "
        f"intermediate {s['intermediate']}, vocab {s['vocab']} ({s['params'] / 1e6:.1f} M params), {s['dtype']}, SDPA; "
        f"{s['tokens_per_frame']} tokens per frame + {s['text_before'] + s['text_after']} text tokens; "
        f"dropout = layers {s['drop_layers']}, ratios {s['ratios']}, {s['mode']}; per frame count, {describe_run(m)}",
        "",
    ]
    body = []
    for r in result["rows"]:
        if "error" in r:
            body.append([r["frames"], r["variant"], f"error: {r['error']}", *[""] * 5])
            continue
        mark = "" if r["memory_method"] == "VmHWM reset" else " *"
        body.append([r["frames"], r["variant"], r["seq_in"], r["seq_out"], f"{r['ms']:.0f}",
                     f"{r['ratio_to_hf']:.2f}×" if "ratio_to_hf" in r else "", f"{r['extra_mib']:.0f}{mark}",
                     f"{r['logits_mib']:.0f}"])
    lines += markdown_table(["frames", "variant", "seq in", "seq out (logits)", "median ms / forward",
                             "× hf (median of ratios)", "peak extra MiB", "logits MiB"], body, "rlrrrrrr")
    if any(r.get("memory_method", "VmHWM reset") != "VmHWM reset" for r in result["rows"]):
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
    p.add_argument("--repeats", type=int, default=5, help="paired repetitions after one warm-up round")
    p.add_argument("--quick", action="store_true", help="tiny model, two frame counts, 3 repetitions, for a smoke run")
    add_output_args(p)
    p.add_argument("--worker-frames", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-variant", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.from_json:
        print(table(read_json(args.from_json, BENCHMARK)))
        return
    if args.quick:
        for k, v in dict(frames="8,16", hidden=64, layers=4, heads=4, kv_heads=2, intermediate=128, vocab=1000,
                         drop_layers="1,2,3", repeats=3).items():
            setattr(args, k, v)
    args.drop_layers = [int(x) for x in str(args.drop_layers).split(",")]
    args.ratios = [float(x) for x in str(args.ratios).split(",")]
    frames = [int(x) for x in str(args.frames).split(",")]
    args.max_positions = args.text_before + max(frames + [args.worker_frames or 0]) * args.tokens_per_frame + args.text_after

    if args.worker_variant:
        print(json.dumps(memory_worker(args)))
        return
    result = measure(frames, args.variants.split(","), args)
    print(table(result))
    if args.json:
        write_json(args.json, BENCHMARK, result)


if __name__ == "__main__":
    main()
