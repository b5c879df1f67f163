"""Every registered HiCo level-1 compressor at InternVL2.5-8B feature shapes: speed, size, memory.

What. For each name in ``COMPRESSORS.names()`` (so a newly registered compressor is benchmarked for
free), build it the way lrc's builder does — constructor arguments filtered by its signature from a
shared vocabulary (``in_dim``, ``frame_tokens``, ``clip_len``, ``tokens_per_frame``; ``mlp`` has no
``tokens_per_frame``: its count is ``frame_tokens·shuffle²``, so ``shuffle`` is derived to give the
same count, 0.25 for 256 → 16) — and run it on a batch of ``--clips`` clips, each clip one
``[clip_len, frame_tokens, dim]`` block. The defaults are InternVL2.5-8B's shapes after pixel shuffle
(paper §3.1, HiCo level 1): 4 frames × 256 tokens × 4096 channels = 1024 tokens per clip, merged to
64 (16 per frame). Each compressor runs in float32 and in bfloat16 (module and input cast).

Reported per (compressor, dtype): tokens in / out per clip, output dim, learnable parameters, median
wall time per clip, the median of the per-repetition ratios to ``--baseline`` (``tome``, HiCo's choice) in
the same dtype, and the peak extra memory of one forward.

Why. HiCo chooses ToMe over pooling, an MLP and a Q-Former; besides accuracy the choice costs
(or saves) parameters, time and memory, and this table puts those side by side on the real shapes.

Time. Every (compressor, dtype) is built in this process and timed interleaved with the others
(benchmarks/_common.py: one warm-up round, then ``--repeats`` rounds each running every variant once, the
order rotating), under ``torch.inference_mode``; the median batch time is divided by the number of clips,
and the load average before and after is reported.

Peak memory: ``tracemalloc`` does not see torch's allocations, so each (compressor, dtype) runs in a
fresh subprocess (``--worker``), which builds the module and the input, reads its resident set size
(VmRSS) as the baseline, resets the kernel's peak-RSS mark (``echo 5 > /proc/self/clear_refs``,
Linux ≥ 4.0), runs one forward and reads the peak (VmHWM). "peak extra" = VmHWM − baseline: the
memory the forward itself needed on top of the weights and the input (output included). Where the
reset is not allowed, the worker falls back to ``ru_maxrss`` (peak RSS of the whole process) minus
the baseline, an upper bound, and the table says so. Figures are from a shared CPU: read the ratios.

    python benchmarks/compressors.py                    # 8 clips, float32 and bf16, 10 paired repetitions
    python benchmarks/compressors.py --quick            # tiny shapes, seconds
    python benchmarks/compressors.py --json c.json      # keep the results; --from-json c.json prints them again
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import statistics
import subprocess
import sys
from functools import partial

import torch

from _common import (add_output_args, describe_run, machine, markdown_table, median_ratio, paired, read_json,
                     write_json)
from _memory import (max_rss_kib as _max_rss_kib, peak_kib as _peak_kib, reset_peak as _reset_peak,
                     status_kib as _status_kib)

from lrc.registry import COMPRESSORS

BENCHMARK = "compressors"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# -- building a compressor the way the builder does ---------------------------------------------
def build(name: str, dim: int, frame_tokens: int, clip_len: int, tokens_per_frame: int) -> torch.nn.Module:
    cls = COMPRESSORS.get(name)
    shared = dict(in_dim=dim, frame_tokens=frame_tokens, clip_len=clip_len, tokens_per_frame=tokens_per_frame,
                  # mlp: tokens per frame = frame_tokens·shuffle², so this gives the same count (0.25: 256 → 16)
                  shuffle=math.sqrt(tokens_per_frame / frame_tokens))
    params = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in shared.items() if k in params})


def setup(name: str, dtype: str, args: argparse.Namespace) -> tuple[torch.nn.Module, torch.Tensor]:
    """The compressor in ``dtype`` and one sample holding all clips (T = clips·clip_len frames; every compressor
    works clip by clip)."""
    torch.manual_seed(0)
    comp = build(name, args.dim, args.frame_tokens, args.clip_len, args.tokens_per_frame).to(DTYPES[dtype]).eval()
    x = torch.randn(1, args.clips * args.clip_len, args.frame_tokens, args.dim).to(DTYPES[dtype])
    return comp, x


# -- peak memory of one (compressor, dtype), in a fresh process ---------------------------------
def memory_worker(args: argparse.Namespace) -> dict:
    comp, x = setup(args.worker, args.dtype, args)
    base_kib = _status_kib("VmRSS") or _max_rss_kib()
    reset_ok = _reset_peak()
    with torch.inference_mode():
        out = comp(x)  # the measured (cold) forward
    peak_kib = _peak_kib(reset_ok)
    del out
    return dict(input_mib=x.numel() * x.element_size() / 2**20, extra_mib=(peak_kib - base_kib) / 1024,
                memory_method="VmHWM reset" if reset_ok else "ru_maxrss (upper bound)")


def run_memory(name: str, dtype: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--dtype", dtype,
           "--clips", str(args.clips), "--dim", str(args.dim), "--frame-tokens", str(args.frame_tokens),
           "--clip-len", str(args.clip_len), "--tokens-per-frame", str(args.tokens_per_frame)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return dict(error=(proc.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- everything, timed paired in this process ---------------------------------------------------
def measure(args: argparse.Namespace) -> dict:
    names = args.names.split(",") if args.names else COMPRESSORS.names()
    baseline = args.baseline or ("tome" if "tome" in names else names[0])
    if baseline not in names:
        raise SystemExit(f"--baseline {baseline!r} is not among the compressors measured ({', '.join(names)})")
    rows, runners = [], {}
    for name in names:
        for dtype in args.dtypes.split(","):
            row = dict(name=name, dtype=dtype)
            rows.append(row)
            try:
                comp, x = setup(name, dtype, args)
                with torch.inference_mode():
                    out = comp(x)
            except Exception as e:  # a compressor that cannot run these shapes is a row, not the end of the table
                row["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
                continue
            row.update(tokens_in=args.clip_len * args.frame_tokens, tokens_out=out.shape[1] // args.clips,
                       out_dim=out.shape[-1], learnable=sum(p.numel() for p in comp.parameters() if p.requires_grad))
            runners[f"{name} {dtype}"] = partial(comp, x)
    print(f"... timing {len(runners)} variants, {args.repeats} paired repetitions", file=sys.stderr, flush=True)
    with torch.inference_mode():
        seconds, load = paired(runners, args.repeats)
    runners.clear()  # free the modules before the memory subprocesses
    for row in rows:
        key, base = f"{row['name']} {row['dtype']}", f"{baseline} {row['dtype']}"
        if key in seconds:
            row["ms_per_clip"] = round(1e3 * statistics.median(seconds[key]) / args.clips, 3)
            if base in seconds:
                row["ratio_to_baseline"] = round(median_ratio(seconds[key], seconds[base]), 3)
        if "error" not in row:
            print(f"... peak memory: {key}", file=sys.stderr, flush=True)
            row.update(run_memory(row["name"], row["dtype"], args))
    return {"setup": {k: getattr(args, k) for k in ("clips", "clip_len", "frame_tokens", "dim", "tokens_per_frame")}
            | {"baseline": baseline},
            "machine": machine(load, args.repeats), "rows": rows,
            "seconds": {k: [round(t, 5) for t in v] for k, v in seconds.items()}}


def table(result: dict) -> str:
    """The Markdown of a result (what --json writes): a function of it alone."""
    s, m = result["setup"], result["machine"]
    lines = [f"Batch of {s['clips']} clips, each {s['clip_len']} frames × {s['frame_tokens']} tokens × {s['dim']} "
             f"dim → {s['tokens_per_frame']} tokens per frame; {describe_run(m)}", ""]
    body = []
    for r in result["rows"]:
        if "error" in r:
            body.append([r["name"], r["dtype"], f"error: {r['error']}", *[""] * 7])
            continue
        mark = "" if r["memory_method"] == "VmHWM reset" else " *"
        body.append([r["name"], r["dtype"], r["tokens_in"], r["tokens_out"], r["out_dim"], f"{r['learnable']:,}",
                     f"{r['ms_per_clip']:.2f}", f"{r['ratio_to_baseline']:.2f}×" if "ratio_to_baseline" in r else "",
                     f"{r['extra_mib']:.0f}{mark}", f"{r['input_mib']:.0f}"])
    lines += markdown_table(["compressor", "dtype", "tokens in/clip", "tokens out/clip", "out dim", "learnable params",
                             "median ms/clip", f"× {s['baseline']}, same dtype (median of ratios)",
                             "peak extra MiB (batch)", "input MiB (batch)"], body, "llrrrrrrrr")
    if any(r.get("memory_method", "VmHWM reset") != "VmHWM reset" for r in result["rows"]):
        lines.append("\n\\* ru_maxrss − baseline (peak-RSS reset unavailable): an upper bound.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=8, help="clips per batch (default 8)")
    p.add_argument("--dim", type=int, default=4096, help="token dim after pixel shuffle (InternVL2.5-8B: 4096)")
    p.add_argument("--frame-tokens", type=int, default=256, help="tokens per frame in (InternVL2.5-8B: 256)")
    p.add_argument("--clip-len", type=int, default=4, help="frames per clip (InternVideo2.5: 4)")
    p.add_argument("--tokens-per-frame", type=int, default=16, help="tokens per frame out (InternVideo2.5: 16)")
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32, bfloat16")
    p.add_argument("--names", default=None, help="comma-separated subset of compressors (default: all registered)")
    p.add_argument("--baseline", default=None, help="the compressor the ratios are to (default: tome if measured)")
    p.add_argument("--repeats", type=int, default=10, help="paired repetitions after one warm-up round")
    p.add_argument("--quick", action="store_true", help="tiny shapes and 3 repetitions, for a smoke run")
    add_output_args(p)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.from_json:
        print(table(read_json(args.from_json, BENCHMARK)))
        return
    if args.worker:
        print(json.dumps(memory_worker(args)))
        return
    if args.quick:
        args.clips, args.dim, args.frame_tokens, args.repeats = 2, 256, 64, 3
        args.tokens_per_frame = min(args.tokens_per_frame, args.frame_tokens)
    result = measure(args)
    print(table(result))
    if args.json:
        write_json(args.json, BENCHMARK, result)


if __name__ == "__main__":
    main()
