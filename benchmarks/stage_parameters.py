"""Trainable and total parameters of each InternVideo2.5 training stage at its real shape.

Builds experiments/internvideo2_5/stage{1,2,3}.yaml exactly as `lrc fit` would (the builder, then the
training module, which applies `optim.freeze`; peft applies LoRA), but on PyTorch's meta device: tensors
have shapes and no storage, so the 8B model costs no memory and no time (the TPO heads are small and
built for real: SAM2's builder reads tensor values). Prints one Markdown table per
stage (per component: trainable / total) and a summary row per stage.

InternVL2.5-8B's tokenizer is not here (no download): the synthetic corpus's tokenizer is built and the
LLM's embeddings are sized to InternVL2.5-8B's 92,553 rows plus the tokens lrc adds (``--vocab``).

    python benchmarks/stage_parameters.py [--stages 1,2,3] [--vocab 92553] [--json PATH] [--quick]
    python benchmarks/stage_parameters.py --from-json PATH     # the tables of a --json file again
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

from _common import add_output_args, markdown_table, read_json, write_json

ROOT = Path(__file__).resolve().parents[1]
STAGES = ROOT / "experiments" / "internvideo2_5"
BENCHMARK = "stage_parameters"


def count(stage: int, vocab: int, tokenizer_root: Path) -> dict[str, tuple[int, int]]:
    from lrc.train.build import build_heads, build_model, build_module, build_tokenizer
    from lrc.config import load_config, validate

    cfg = validate(load_config(STAGES / f"stage{stage}.yaml", [f"data.root={tokenizer_root}"]))
    tokenizer = build_tokenizer(cfg)
    added = len(tokenizer) - tokenizer.vocab_size  # lrc's special tokens and the heads' task tokens
    with torch.device("meta"):
        model = build_model({**cfg, "model": {**cfg["model"], "heads": {}}}, tokenizer)
        base = model.llm.model.get_base_model() if hasattr(model.llm.model, "get_base_model") else model.llm.model
        base.resize_token_embeddings(vocab + added, mean_resizing=False)
    # SAM2's builder reads tensor values, so the heads (small) are built for real
    model.heads = build_heads(cfg, tokenizer, model.llm.hidden_size)
    build_module(cfg, model)  # applies optim.freeze
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, p in model.named_parameters():
        part = name.split(".")[0]
        if part == "llm":
            part = "llm (LoRA)" if "lora_" in name else "llm"
        if part == "heads" and ".sam." in name:
            part = "heads (SAM2)"
        out[part][1] += p.numel()
        out[part][0] += p.numel() if p.requires_grad else 0
    return {k: (v[0], v[1]) for k, v in out.items()}


def table(result: dict) -> str:
    """The Markdown of a result (what --json writes): one table per stage, then the summary."""
    lines, summary = [], []
    for stage, rows in result["stages"].items():
        lines += ["", f"### stage {stage}", ""]
        lines += markdown_table(["component", "trainable", "total"],
                                [[part, f"{trainable:,}", f"{total:,}"] for part, (trainable, total) in rows.items()],
                                "lrr")
        trainable, total = (sum(v[i] for v in rows.values()) for i in (0, 1))
        summary.append([stage, f"{trainable:,}", f"{total:,}", f"{100 * trainable / total:.2f} %"])
    lines += [""] + markdown_table(["stage", "trainable", "total", "trainable share"], summary, "lrrr")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", default="1,2,3")
    parser.add_argument("--vocab", type=int, default=92553, help="the LLM's vocabulary before lrc's tokens")
    parser.add_argument("--quick", action="store_true", help="stage 1 only, for a smoke run")
    add_output_args(parser)
    args = parser.parse_args()
    if args.from_json:
        print(table(read_json(args.from_json, BENCHMARK)))
        return
    from lrc.data.synth import synthesize

    stages = [1] if args.quick else [int(s) for s in args.stages.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        synthesize(Path(tmp), videos=1, size=16, min_seconds=1.0, max_seconds=1.0)  # for its tokenizer only
        result = {"vocab": args.vocab, "stages": {str(stage): dict(sorted(count(stage, args.vocab, Path(tmp)).items()))
                                                  for stage in stages}}
    print(table(result))
    if args.json:
        write_json(args.json, BENCHMARK, result)


if __name__ == "__main__":
    main()
