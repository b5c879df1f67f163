"""Every registered HiCo level-1 compressor at InternVL2.5-8B feature shapes: speed, size, memory.

What. For each name in ``COMPRESSORS.names()`` (so a newly registered compressor is benchmarked for
free), build it the way lrc's builder does — constructor arguments filtered by its signature from a
shared vocabulary (``in_dim``, ``frame_tokens``, ``clip_len``, ``tokens_per_frame``; ``mlp`` has no
``tokens_per_frame``: its count is ``frame_tokens·shuffle²``, so ``shuffle`` is derived to give the
same count, 0.25 for 256 → 16) — and run it on a batch of ``--clips`` clips, each clip one
``[clip_len, frame_tokens, dim]`` block. The defaults are InternVL2.5-8B's shapes after pixel shuffle
(paper §3.1, HiCo level 1): 4 frames × 256 tokens × 4096 channels = 1024 tokens per clip, merged to
64 (16 per frame). Each compressor runs in float32 and in bfloat16 (module and input cast).

Reported per (compressor, dtype): tokens in / out per clip, output dim, learnable parameters, mean
wall time per clip (``--warmup`` untimed batches, then the mean over ``--repeats`` timed batches,
under ``torch.inference_mode``, divided by the number of clips), and the peak extra memory of one
forward.

Why. HiCo chooses ToMe over pooling, an MLP and a Q-Former; besides accuracy the choice costs
(or saves) parameters, time and memory, and this table puts those side by side on the real shapes.

Peak memory: ``tracemalloc`` does not see torch's allocations, so each (compressor, dtype) runs in a
fresh subprocess (``--worker``), which builds the module and the input, reads its resident set size
(VmRSS) as the baseline, resets the kernel's peak-RSS mark (``echo 5 > /proc/self/clear_refs``,
Linux ≥ 4.0), runs one forward and reads the peak (VmHWM). "peak extra" = VmHWM − baseline: the
memory the forward itself needed on top of the weights and the input (output included). Where the
reset is not allowed, the worker falls back to ``ru_maxrss`` (peak RSS of the whole process) minus
the baseline, an upper bound, and the table says so. Figures are from a shared CPU: indicative.

    python benchmarks/compressors.py                 # 8 clips, float32 and bf16
    python benchmarks/compressors.py --quick         # tiny shapes, seconds
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import subprocess
import sys
import time

import torch

from lrc.registry import COMPRESSORS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


from _memory import (max_rss_kib as _max_rss_kib, peak_kib as _peak_kib, reset_peak as _reset_peak,  # noqa: E402
                     status_kib as _status_kib)


# -- building a compressor the way the builder does ---------------------------------------------
def build(name: str, dim: int, frame_tokens: int, clip_len: int, tokens_per_frame: int) -> torch.nn.Module:
    cls = COMPRESSORS.get(name)
    shared = dict(in_dim=dim, frame_tokens=frame_tokens, clip_len=clip_len, tokens_per_frame=tokens_per_frame,
                  # mlp: tokens per frame = frame_tokens·shuffle², so this gives the same count (0.25: 256 → 16)
                  shuffle=math.sqrt(tokens_per_frame / frame_tokens))
    params = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in shared.items() if k in params})


# -- one (compressor, dtype) in this process ----------------------------------------------------
def worker(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    dtype = DTYPES[args.dtype]
    comp = build(args.worker, args.dim, args.frame_tokens, args.clip_len, args.tokens_per_frame).to(dtype).eval()
    learnable = sum(p.numel() for p in comp.parameters() if p.requires_grad)
    # one sample holding all clips (T = clips·clip_len frames); every compressor works clip by clip
    x = torch.randn(1, args.clips * args.clip_len, args.frame_tokens, args.dim).to(dtype)

    base_kib = _status_kib("VmRSS") or _max_rss_kib()
    reset_ok = _reset_peak()
    with torch.inference_mode():
        out = comp(x)  # the measured (cold) forward
    peak_kib = _peak_kib(reset_ok)
    del out

    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.repeats):
            t0 = time.perf_counter()
            out = comp(x)
            dt = time.perf_counter() - t0
            if i >= args.warmup:
                times.append(dt)
            del out
        out = comp(x)
    mean = sum(times) / len(times)
    std = (sum((t - mean) ** 2 for t in times) / max(len(times) - 1, 1)) ** 0.5
    return dict(
        name=args.worker, dtype=args.dtype,
        tokens_in=args.clip_len * args.frame_tokens, tokens_out=out.shape[1] // args.clips, out_dim=out.shape[-1],
        learnable=learnable, ms_per_clip=1e3 * mean / args.clips, ms_std=1e3 * std / args.clips,
        input_mib=x.numel() * x.element_size() / 2**20,
        extra_mib=(peak_kib - base_kib) / 1024, memory_method="VmHWM reset" if reset_ok else "ru_maxrss (upper bound)",
    )


# -- driver: one fresh subprocess per (compressor, dtype) ---------------------------------------
def run_one(name: str, dtype: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--dtype", dtype,
           "--clips", str(args.clips), "--dim", str(args.dim), "--frame-tokens", str(args.frame_tokens),
           "--clip-len", str(args.clip_len), "--tokens-per-frame", str(args.tokens_per_frame),
           "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return dict(name=name, dtype=dtype, error=(proc.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"Batch of {args.clips} clips, each {args.clip_len} frames × {args.frame_tokens} tokens × {args.dim} dim; "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}.",
        "",
        "| compressor | dtype | tokens in/clip | tokens out/clip | out dim | learnable params | ms/clip (± std) "
        "| peak extra MiB (batch) | input MiB (batch) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['dtype']} | error: {r['error']} | | | | | | |")
            continue
        mark = "" if r["memory_method"] == "VmHWM reset" else " *"
        lines.append(
            f"| {r['name']} | {r['dtype']} | {r['tokens_in']} | {r['tokens_out']} | {r['out_dim']} | "
            f"{r['learnable']:,} | {r['ms_per_clip']:.2f} (± {r['ms_std']:.2f}) | {r['extra_mib']:.0f}{mark} | "
            f"{r['input_mib']:.0f} |")
    if any(r.get("memory_method", "VmHWM reset") != "VmHWM reset" for r in rows):
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
    p.add_argument("--warmup", type=int, default=2, help="untimed batches after the measured one")
    p.add_argument("--repeats", type=int, default=5, help="timed batches")
    p.add_argument("--quick", action="store_true", help="tiny shapes and one repeat, for a smoke run")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.quick:
        args.clips, args.dim, args.frame_tokens, args.warmup, args.repeats = 2, 256, 64, 1, 1
        args.tokens_per_frame = min(args.tokens_per_frame, args.frame_tokens)
    names = args.names.split(",") if args.names else COMPRESSORS.names()
    rows = []
    for name in names:
        for dtype in args.dtypes.split(","):
            print(f"... {name} {dtype}", file=sys.stderr, flush=True)
            rows.append(run_one(name, dtype, args))
    print(table(rows, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
