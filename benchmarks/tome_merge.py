"""HiCo's ToMe merge in bfloat16 against a re-statement of the released merge: paired time, peak memory.

What. Three merges of the same clips at InternVL2.5-8B shapes (4 frames × 256 tokens × 4096 channels per
clip, merged to 16 tokens per frame, metric groups of 128 channels):

* ``lrc-bf16``: lrc's ``tome`` compressor (order restored, as lrc runs it) on a bfloat16 input;
* ``reference-bf16``: the released merge as VideoChat-Flash writes it — every step in the input dtype:
  the group-mean metric, the cosine scores, the size-weighted sum and the division — re-stated below in a
  few lines (bipartite soft matching with ``scatter_reduce(sum)``, no order restored);
* ``lrc-fp32``: lrc's compressor on the same clips in float32.

Time. The variants run interleaved in one process (benchmarks/_common.py: one warm-up round, then every
repetition runs each once, the order rotating), so machine noise hits them alike; the table gives each one's median time per clip and the median
of the per-repetition ratios to ``reference-bf16``, with the load average before and after.

Memory. Each variant runs once more in a fresh subprocess: the resident set size with the input built is
the baseline, the kernel's peak mark is reset, one merge runs, and VmHWM − baseline is its peak extra
memory, also given as a multiple of the input's size.

    python benchmarks/tome_merge.py               # 8 clips, 15 paired repetitions
    python benchmarks/tome_merge.py --quick       # tiny shapes, seconds
    python benchmarks/tome_merge.py --json out.json   # keep the results; --from-json out.json prints them again
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from functools import partial

import torch
import torch.nn.functional as F

from _common import add_output_args, median_ratio, paired, read_json, write_json
from _memory import peak_kib, reset_peak, status_kib  # noqa: E402

from lrc.registry import COMPRESSORS

BENCHMARK = "tome_merge"
VARIANTS = ("lrc-bf16", "reference-bf16", "lrc-fp32")


def reference_merge(x: torch.Tensor, target: int, head_dim: int) -> torch.Tensor:
    """The released merge of clips ``x [N, p, D]`` down to ``target`` tokens each, in x's dtype throughout."""
    from lrc_plugins.compressors.tome import merge_schedule

    n, p, d = x.shape
    size = torch.ones(n, p, 1, dtype=x.dtype)
    for r in merge_schedule(p, target):
        metric = x.reshape(n, x.shape[1], d // head_dim, head_dim).mean(dim=2)
        metric = metric / metric.norm(dim=-1, keepdim=True)
        scores = metric[:, ::2] @ metric[:, 1::2].transpose(-1, -2)
        best, best_idx = scores.max(dim=-1)
        order = best.argsort(dim=-1, descending=True)[..., None]
        unm, src = order[:, r:], order[:, :r]
        dst = best_idx[..., None].gather(1, src)

        def merge(t: torch.Tensor) -> torch.Tensor:
            a, b = t[:, ::2], t[:, 1::2]
            c = t.shape[-1]
            kept = a.gather(1, unm.expand(-1, -1, c))
            b = b.scatter_reduce(1, dst.expand(-1, -1, c), a.gather(1, src.expand(-1, -1, c)), reduce="sum")
            return torch.cat([kept, b], dim=1)

        x = merge(x * size)
        size = merge(size)
        x = x / size
    return x


def make_inputs(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(1, args.clips * args.clip_len, args.frame_tokens, args.dim).to(torch.bfloat16)
    return {"bf16": x, "fp32": x.float()}


def runner(variant: str, args: argparse.Namespace):
    """A callable running ``variant`` once on its input."""
    tome = COMPRESSORS.get("tome")(in_dim=args.dim, clip_len=args.clip_len, tokens_per_frame=args.tokens_per_frame,
                                   head_dim=args.head_dim).eval()
    target = args.clip_len * args.tokens_per_frame
    if variant == "reference-bf16":
        return lambda x: reference_merge(x.reshape(-1, args.clip_len * args.frame_tokens, args.dim), target,
                                         args.head_dim)
    return tome


def memory_worker(args: argparse.Namespace) -> dict:
    x = make_inputs(args)["fp32" if args.worker.endswith("fp32") else "bf16"]
    fn = runner(args.worker, args)
    with torch.inference_mode():
        fn(x)  # warm the allocator and any lazy initialisation
    base = status_kib("VmRSS") or 0
    ok = reset_peak()
    with torch.inference_mode():
        out = fn(x)
    extra_mib = (peak_kib(ok) - base) / 1024
    del out
    input_mib = x.numel() * x.element_size() / 2**20
    return {"variant": args.worker, "peak_extra_mib": round(extra_mib, 1), "input_mib": round(input_mib, 1),
            "peak_over_input": round(extra_mib / input_mib, 2), "peak_reset": ok}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--clip-len", type=int, default=4)
    p.add_argument("--frame-tokens", type=int, default=256)
    p.add_argument("--dim", type=int, default=4096)
    p.add_argument("--tokens-per-frame", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--quick", action="store_true", help="tiny shapes and 3 repetitions")
    add_output_args(p)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.from_json:
        print(table(read_json(args.from_json, BENCHMARK)))
        return
    if args.quick:
        args.clips, args.frame_tokens, args.dim, args.head_dim, args.repeats = 2, 64, 256, 64, 3
    if args.worker:
        print(json.dumps(memory_worker(args)))
        return

    inputs = make_inputs(args)
    fns = {v: partial(runner(v, args), inputs["fp32" if v.endswith("fp32") else "bf16"]) for v in VARIANTS}
    with torch.inference_mode():
        times, load = paired(fns, args.repeats)

    memory = {}
    passed = [a for a in sys.argv[1:] if a != "--json" and not a.endswith(".json")]
    for v in VARIANTS:
        done = subprocess.run([sys.executable, __file__, "--worker", v, *passed], capture_output=True, text=True,
                              check=True)
        memory[v] = json.loads(done.stdout.strip().splitlines()[-1])

    rows = []
    for v in VARIANTS:
        rows.append({"variant": v, "median_ms_per_clip": round(1000 * statistics.median(times[v]) / args.clips, 3),
                     "median_ratio_to_reference": round(median_ratio(times[v], times["reference-bf16"]), 3),
                     **memory[v]})
    shape = f"{args.clips} clips of {args.clip_len}×{args.frame_tokens} tokens × {args.dim} → {args.tokens_per_frame}/frame"
    result = {"shape": shape, "head_dim": args.head_dim, "repeats": args.repeats, "load_average": load,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}
    print(table(result))
    if args.json:
        write_json(args.json, BENCHMARK, result)


def table(result: dict) -> str:
    """The Markdown of a result (what --json writes): a function of it alone."""
    before, after = result["load_average"]
    lines = [f"ToMe merge, {result['shape']}, head_dim {result['head_dim']}; {result['repeats']} paired repetitions; "
             f"torch {result['torch']}, {result['threads']} threads; load average {before:.2f} before, "
             f"{after:.2f} after", "",
             "| variant | median ms / clip | median ratio to reference-bf16 | peak extra MiB | × input |",
             "| --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        lines.append(f"| {r['variant']} | {r['median_ms_per_clip']} | {r['median_ratio_to_reference']} | "
                     f"{r['peak_extra_mib']}{'' if r['peak_reset'] else ' (upper bound)'} | {r['peak_over_input']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
