"""Dynamic packing versus padding: token utilisation and training throughput on skewed lengths.

What. A corpus of ``--samples`` video samples with a skewed (lognormal) length distribution, as real
video instruction data has: frames ~ lognormal (median ``--frames-median``, clipped to
[``--frames-min``, ``--frames-max``]) × ``--tokens-per-frame`` visual tokens (after HiCo compression:
16 per frame), plus text tokens ~ lognormal (median ``--text-median``). Each sample's last
``--answer-tokens`` tokens are its answer (labelled). The same samples go through a small random-init
Qwen2-style LLM (lrc's ``hf_causal_lm`` plugin, SDPA, float32), forward + backward of L_base, in two ways:

* ``padding`` — lrc's default loader: shuffled batches of ``--batch-size`` samples, right-padded to the
  longest (``lrc.data.collate.collate``), with a 2-D attention mask;
* ``packing`` — ``data.packing``: packs of at most ``--max-tokens`` tokens planned by
  ``lrc.data.packing.plan_packs``, one row per step (``collate_packed``), per-sample position ids, no mask:
  the LLM plugin attends within each sample (lrc/model/varlen_attention.py), no N × N mask is built.

Reported per mode: steps, real tokens, token slots computed (batch × longest for padding; the row
length for packing), utilisation = real / slots, for packing also how full the budget is
(real / (packs × max_tokens)), attention entries relative to attending within samples only (Σ n_i²,
which packing computes, as flash-attention's varlen kernel does on GPU; padding computes B × L_max² per
batch), the median time of a pass over all samples, samples/s and real tokens/s. The two modes run
interleaved, ``--repeats`` passes each in a fresh random order per repetition, after one warm-up step
each, and the headline is the median of the per-repetition throughput ratios, with the load average:
compare the two modes of one run, not runs across machines.

    python benchmarks/packing.py                      # 192 samples, batch 8 vs 4096-token packs
    python benchmarks/packing.py --quick              # a smoke run in seconds
    python benchmarks/packing.py --json p.json        # keep the rows; --from-json p.json prints the table again
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lrc.data.collate import collate  # noqa: E402
from lrc.data.packing import collate_packed, plan_packs  # noqa: E402
from lrc.model.mllm import answer_loss  # noqa: E402
from lrc.data.prompt import IGNORE_INDEX  # noqa: E402

from _common import add_output_args, read_json, write_json  # noqa: E402  (benchmarks/, beside this script)


def corpus(args: argparse.Namespace) -> list[dict]:
    """Dataset items (the keys lrc's collators read) with lognormal frame counts and text lengths."""
    rng = np.random.default_rng(args.seed)
    frames = np.clip(np.round(rng.lognormal(np.log(args.frames_median), args.sigma, args.samples)),
                     args.frames_min, args.frames_max).astype(int)
    text = np.clip(np.round(rng.lognormal(np.log(args.text_median), args.sigma, args.samples)),
                   args.answer_tokens + 2, args.text_max).astype(int)
    items = []
    for i, (f, t) in enumerate(zip(frames, text)):
        n = int(f * args.tokens_per_frame + t)
        ids = torch.from_numpy(rng.integers(1, args.vocab, n))
        labels = torch.full((n,), IGNORE_INDEX)
        labels[-args.answer_tokens:] = ids[-args.answer_tokens:]
        items.append({"id": f"s{i}", "pixel_values": torch.zeros(int(f), 3, 1, 1), "timestamps": torch.zeros(int(f)),
                      "input_ids": ids, "labels": labels, "answer_start": n - args.answer_tokens,
                      "question_type": "bench", "query_positions": []})
    return items


def build_llm(args: argparse.Namespace) -> torch.nn.Module:
    from lrc.registry import LLMS

    torch.manual_seed(0)
    return LLMS.get("hf_causal_lm")(vocab_size=args.vocab, attn_implementation="sdpa", config={
        "model_type": "qwen2", "hidden_size": args.hidden, "intermediate_size": args.intermediate,
        "num_hidden_layers": args.layers, "num_attention_heads": args.heads, "num_key_value_heads": args.kv_heads,
        "max_position_embeddings": 32768})


def batches(mode: str, items: list[dict], args: argparse.Namespace) -> list[dict]:
    if mode == "padding":
        order = np.random.default_rng(args.seed).permutation(len(items)).tolist()
        return [collate([items[i] for i in order[s:s + args.batch_size]], pad_id=0)
                for s in range(0, len(order), args.batch_size)]
    packs = plan_packs([len(it["input_ids"]) for it in items], args.max_tokens, seed=args.seed,
                       lookahead=args.lookahead)
    return [collate_packed([items[i] for i in pack], pad_id=0, max_tokens=args.max_tokens) for pack in packs]


def step(llm: torch.nn.Module, batch: dict) -> None:
    embeds = llm.embed(batch["input_ids"])
    out = llm(inputs_embeds=embeds, attention_mask=batch.get("attention_mask"), position_ids=batch.get("position_ids"))
    answer_loss(out.logits, batch["labels"]).backward()


def describe(mode: str, todo: list[dict], items: list[dict], args: argparse.Namespace) -> dict:
    """What a pass of ``mode`` computes: steps, token slots, utilisation, attention entries."""
    lengths = [len(it["input_ids"]) for it in items]
    real = sum(lengths)
    slots = sum(b["input_ids"].numel() for b in todo)
    within = sum(n * n for n in lengths)
    # padding attends over B × L_max² per batch; a packed row attends within its samples (lrc's varlen SDPA,
    # lrc/model/varlen_attention.py), as flash-attention's varlen kernel does on GPU
    computed = sum(b["input_ids"].shape[0] * b["input_ids"].shape[1] ** 2 for b in todo) if mode == "padding" \
        else within
    row = dict(mode=mode, steps=len(todo), samples=len(items), real_tokens=real, slots=slots,
               utilisation=real / slots, attention_vs_within=computed / within)
    if mode == "packing":
        row["budget_fill"] = real / (len(todo) * args.max_tokens)
    return row


def one_pass(llm: torch.nn.Module, todo: list[dict]) -> float:
    began = time.perf_counter()
    for batch in todo:
        llm.zero_grad(set_to_none=True)
        step(llm, batch)
    return time.perf_counter() - began


def measure(llm: torch.nn.Module, items: list[dict], args: argparse.Namespace) -> tuple[list[dict], float, tuple]:
    """Both modes over the same samples, ``--repeats`` passes each, interleaved in a fresh random order every
    repetition so that machine noise hits both alike. Rows carry the median pass time; also returns the median
    of the per-repetition ratios (packing samples/s over padding samples/s) and the load averages."""
    import os
    import random
    import statistics

    todo = {mode: batches(mode, items, args) for mode in MODES}
    for mode in MODES:  # warm-up
        llm.zero_grad(set_to_none=True)
        step(llm, todo[mode][0])
    load_before = os.getloadavg()
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    rng = random.Random(args.seed)
    for _ in range(args.repeats):
        for mode in rng.sample(MODES, len(MODES)):
            seconds[mode].append(one_pass(llm, todo[mode]))
    load = (load_before[0], os.getloadavg()[0])
    rows = []
    for mode in MODES:
        s = statistics.median(seconds[mode])
        rows.append({**describe(mode, todo[mode], items, args), "seconds": s, "samples_per_s": len(items) / s,
                     "tokens_per_s": sum(len(it["input_ids"]) for it in items) / s})
    ratio = statistics.median(pad / pack for pad, pack in zip(seconds["padding"], seconds["packing"]))
    return rows, ratio, load


BENCHMARK = "packing"
MODES = ("padding", "packing")


def about(items: list[dict], args: argparse.Namespace, load: tuple) -> str:
    """The run's setting in one paragraph (kept in the JSON: the table is a function of the file alone)."""
    lengths = np.array([len(it["input_ids"]) for it in items])
    frames = np.array([len(it["pixel_values"]) for it in items])
    return (
        f"{args.samples} samples: frames lognormal (median {args.frames_median}, σ {args.sigma}, "
        f"{frames.min()}–{frames.max()}) × {args.tokens_per_frame} tokens + text (median {args.text_median}); "
        f"lengths {lengths.min()}–{lengths.max()}, median {int(np.median(lengths))}, mean {lengths.mean():.0f}. "
        f"Qwen2-style LLM hidden {args.hidden}, {args.layers} layers, {args.heads}/{args.kv_heads} heads, vocab "
        f"{args.vocab}, float32, SDPA, forward + backward; padding: batch {args.batch_size}; packing: max_tokens "
        f"{args.max_tokens}, lookahead {args.lookahead}; {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"{args.repeats} interleaved passes of each mode, median pass time; load average {load[0]:.2f} before, "
        f"{load[1]:.2f} after.")


def table(result: dict) -> str:
    lines = [
        result["about"],
        "",
        "| mode | steps | real tokens | slots | utilisation | budget fill | attention vs within-sample | s | samples/s | tokens/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        fill = f"{r['budget_fill']:.1%}" if "budget_fill" in r else "—"
        lines.append(f"| {r['mode']} | {r['steps']} | {r['real_tokens']} | {r['slots']} | {r['utilisation']:.1%} | "
                     f"{fill} | {r['attention_vs_within']:.1f}× | {r['seconds']:.1f} | {r['samples_per_s']:.1f} | "
                     f"{r['tokens_per_s']:.0f} |")
    lines += ["", "packing / padding throughput (median of the per-repetition ratios): "
                  f"{result['packing_over_padding']:.2f}×"]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=192)
    p.add_argument("--frames-median", type=float, default=8.0)
    p.add_argument("--frames-min", type=int, default=2)
    p.add_argument("--frames-max", type=int, default=64)
    p.add_argument("--tokens-per-frame", type=int, default=16, help="visual tokens per frame after compression")
    p.add_argument("--text-median", type=float, default=64.0)
    p.add_argument("--text-max", type=int, default=512)
    p.add_argument("--sigma", type=float, default=0.8, help="lognormal σ of frames and text lengths")
    p.add_argument("--answer-tokens", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8, help="padding: samples per batch")
    p.add_argument("--max-tokens", type=int, default=4096, help="packing: tokens per packed row")
    p.add_argument("--lookahead", type=int, default=512, help="packing: samples planned together")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--intermediate", type=int, default=704)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5, help="interleaved passes of each mode")
    p.add_argument("--quick", action="store_true", help="48 small samples and a tiny LLM, for a smoke run")
    add_output_args(p)
    args = p.parse_args()
    if args.from_json:
        print(table(read_json(args.from_json, BENCHMARK)))
        return
    if args.quick:
        for k, v in dict(samples=48, frames_max=16, hidden=64, intermediate=128, layers=2, vocab=1000,
                         max_tokens=1024, repeats=2).items():
            setattr(args, k, v)
    longest = args.frames_max * args.tokens_per_frame + args.text_max
    if args.max_tokens < longest:
        raise SystemExit(f"--max-tokens {args.max_tokens} is below the longest possible sample ({longest} tokens); "
                         "packing never splits a sample")
    items = corpus(args)
    llm = build_llm(args).train()
    rows, ratio, load = measure(llm, items, args)
    result = {"about": about(items, args, load), "rows": rows, "packing_over_padding": ratio, "load_average": list(load),
              "repeats": args.repeats, "threads": torch.get_num_threads()}
    print(table(result))
    if args.json:
        write_json(args.json, BENCHMARK, result)


if __name__ == "__main__":
    main()
