"""Generation with and without the key/value cache: 64 new tokens after a 64-frame video.

What. lrc's generation (``lrc.model.generation.generate``, what ``lrc.load(...).chat`` and ``lrc infer`` run)
on a VideoMLLM built by lrc's builder from the demo config (experiments/demo/tiny.yaml) with a larger
random-init Qwen2-style LLM (default hidden 512, 8 layers, 8/2 heads, intermediate 1408, float32, SDPA).
The prompt is the real chat prompt (lrc's ``chatml`` layout) of a ``--frames``-frame video at 16 tokens per
frame (HiCo's ToMe), with random visual embeddings in its slots (the vision encoder is not what is
compared). Each generation produces exactly ``--new-tokens`` tokens, greedy, no stop token:

* ``cached``   — the prompt is read once, each new token is one position through transformers' cache;
* ``uncached`` — the whole sequence is recomputed for every new token (lrc's generation before the cache).

``--token-dropout`` adds the same pair with HiCo token dropout at prefill (layers 2, 4, 6; keep 0.5, 0.25,
0.125; uniform then attention), the uncached one recomputing with the same drops.

How. Paired and interleaved in one process (benchmarks/_common.py): each repetition runs every variant
once, the order rotating from one repetition to the next, after one warm-up round; medians of the times,
the median of the per-repetition ratios, and the 1-minute load average before and after (the machine is
shared). Both variants are checked to produce the same tokens.

    python benchmarks/generation.py                    # 64 frames, 64 new tokens, 5 repetitions
    python benchmarks/generation.py --quick            # a small model, for a smoke run
    python benchmarks/generation.py --json gen.json --token-dropout
    python benchmarks/generation.py --from-json gen.json          # its table again, measuring nothing
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch

from _common import add_output_args, markdown_table, median_ratio, paired, read_json, write_json

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = "generation"


def build(args: argparse.Namespace, dropout: bool):
    from lrc.config import load_config, validate
    from lrc.data.prompt import PromptBuilder
    from lrc.data.synth import synthesize
    from lrc.train.build import build_model, build_prompt, build_tokenizer

    corpus = Path(args.corpus)
    if not (corpus / "tokenizer").is_dir():
        synthesize(corpus, videos=2, seed=0, size=32, min_seconds=2.0, max_seconds=3.0)
    overrides = [f"data.root={corpus}", "data.synth_videos=null", "distributed.accelerator=cpu",
                 "model.encoder.image_size=32", "model.encoder.patch_size=8", "model.encoder.embed_dim=64",
                 "model.encoder.depth=1", f"model.compressor.tokens_per_frame={args.tokens_per_frame}",
                 f"model.llm.config.hidden_size={args.hidden}", f"model.llm.config.num_hidden_layers={args.layers}",
                 f"model.llm.config.num_attention_heads={args.heads}",
                 f"model.llm.config.num_key_value_heads={args.kv_heads}",
                 f"model.llm.config.intermediate_size={args.intermediate}",
                 f"model.llm.config.max_position_embeddings={max(4096, args.frames * args.tokens_per_frame * 2)}"]
    if dropout:
        overrides += ["model.token_dropout.enabled=true", f"model.token_dropout.layers={args.drop_layers}",
                      "model.token_dropout.ratios=[0.5,0.25,0.125]"]
    cfg = validate(load_config(ROOT / "experiments" / "demo" / "tiny.yaml", overrides))
    tok = build_tokenizer(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, tok).eval()
    prompts = PromptBuilder(tok, model.tokens_per_frame, prompt=build_prompt(cfg))
    enc = prompts.generation_prompt([{"from": "human", "value": "<video>\nWhat colour is the square?"}],
                                    float(args.frames), args.frames)
    g = torch.Generator().manual_seed(1)
    visual = 0.02 * torch.randn(args.frames * model.tokens_per_frame, model.llm.hidden_size, generator=g)
    return model, enc.input_ids, visual


def run(model, prompt, visual, cached: bool, new_tokens: int) -> list[int]:
    from lrc.model.generation import generate

    return generate(model, prompt, visual, max_new_tokens=new_tokens, use_cache=cached).token_ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--tokens-per-frame", type=int, default=16)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=1408)
    p.add_argument("--drop-layers", default="[2,4,6]")
    p.add_argument("--repeats", type=int, default=5, help="paired repetitions after one warm-up round")
    p.add_argument("--token-dropout", action="store_true", help="also compare the pair with token dropout at prefill")
    p.add_argument("--corpus", default=os.path.join(tempfile.gettempdir(), "lrc-bench-corpus"),
                   help="where a 2-video synthetic corpus (for its tokenizer) is kept")
    p.add_argument("--quick", action="store_true", help="small model, 16 frames, 16 new tokens, 2 repetitions")
    add_output_args(p)
    args = p.parse_args()
    if args.from_json:
        print(table(read_json(args.from_json, BENCHMARK)))
        return
    if args.quick:
        for k, v in dict(frames=16, new_tokens=16, hidden=64, layers=4, heads=4, kv_heads=2, intermediate=128,
                         repeats=2, drop_layers="[1,2,3]").items():
            setattr(args, k, v)

    setups = {"": build(args, dropout=False)}
    if args.token_dropout:
        setups["dropout "] = build(args, dropout=True)
    tokens: dict[str, list[int]] = {}

    def variant(name: str, model, prompt, visual, cached: bool):
        def once() -> None:  # greedy: every run gives the same tokens, the last run's are kept
            tokens[name] = run(model, prompt, visual, cached, args.new_tokens)
        return once

    variants = {f"{prefix}{kind}": variant(f"{prefix}{kind}", *setup, kind == "cached")
                for prefix, setup in setups.items() for kind in ("cached", "uncached")}
    with torch.inference_mode():
        times, (load_before, load_after) = paired(variants, args.repeats, progress=True)

    model, prompt, _ = setups[""]
    params = sum(p.numel() for p in model.llm.parameters())
    result = {
        "frames": args.frames, "tokens_per_frame": args.tokens_per_frame, "new_tokens": args.new_tokens,
        "prompt_tokens": len(prompt),
        "llm": {"hidden": args.hidden, "layers": args.layers, "heads": args.heads, "kv_heads": args.kv_heads,
                "intermediate": args.intermediate, "params_m": round(params / 1e6, 1)},
        "repeats": args.repeats, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "load_average_1m": [load_before, load_after],
        "median_s": {name: round(statistics.median(v), 3) for name, v in times.items()},
        "times_s": {name: [round(t, 3) for t in v] for name, v in times.items()},
        "same_tokens": {prefix.strip() or "plain": tokens[f"{prefix}cached"] == tokens[f"{prefix}uncached"]
                        for prefix in setups},
    }
    for prefix in setups:
        result[f"{prefix.strip() or 'plain'}_speedup_median"] = round(
            median_ratio(times[f"{prefix}uncached"], times[f"{prefix}cached"]), 2)
    print(table(result))
    if args.json:
        write_json(args.json, BENCHMARK, result)


def table(result: dict) -> str:
    """The Markdown of a result (what --json writes): a function of it alone."""
    llm, (before, after) = result["llm"], result["load_average_1m"]
    lines = [
        "",
        f"LLM: Qwen2-style, hidden {llm['hidden']}, {llm['layers']} layers, {llm['heads']}/{llm['kv_heads']} heads, "
        f"intermediate {llm['intermediate']} ({llm['params_m']:.1f} M params), float32, SDPA; prompt "
        f"{result['prompt_tokens']} tokens ({result['frames']} frames x {result['tokens_per_frame']}); "
        f"{result['new_tokens']} new tokens, greedy; {result['repeats']} paired repetitions; {result['threads']} "
        f"threads, torch {result['torch']}; load average {before:.2f} -> {after:.2f}.",
        "",
    ]
    body = []
    for key in result["same_tokens"]:
        prefix = "" if key == "plain" else f"{key} "
        for kind in ("cached", "uncached"):
            median = result["median_s"][f"{prefix}{kind}"]
            speed = f"{result[f'{key}_speedup_median']:.1f}x" if kind == "cached" else "1.0x"
            body.append([f"{prefix}{kind}", f"{median:.2f}", f"{result['new_tokens'] / median:.1f}", speed,
                         result["same_tokens"][key]])
    lines += markdown_table(["variant", "median s", "tokens / s", "speedup (median of pairs)", "same tokens"], body,
                            "lrrrl")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
