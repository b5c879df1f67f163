"""What a durable checkpoint write costs: lrc's DurableCheckpointIO (temporary file in the same folder, flushed,
fsynced, renamed, folder fsynced) against Lightning's default TorchCheckpointIO (serialised into memory, written
through fsspec: a temporary file in the system's temp folder, then moved), on checkpoints of several sizes.

The two are interleaved in one process (A, B, A, B ...), each repetition writing to the same folder; the table
gives the median seconds of each, their ratio and the machine's load average. A checkpoint here is a plain
state dict of float32 tensors, the bulk of what a Lightning checkpoint holds (weights + AdamW's two moments).

    python benchmarks/checkpoint_write.py [--sizes-mib 2,64,512] [--repeats 7] [--dir DIR] [--json PATH] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning.pytorch.plugins.io import TorchCheckpointIO  # noqa: E402

from lrc.train.checkpointing import DurableCheckpointIO  # noqa: E402


def state(mib: float) -> dict[str, torch.Tensor]:
    n = int(mib * 2**20 / 4)
    chunk = 2**20
    return {f"w{i}": torch.randn(min(chunk, n - i * chunk)) for i in range((n + chunk - 1) // chunk)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-mib", default="2,64,512")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--dir", default=None, help="where to write (default: a temporary folder under the cwd)")
    p.add_argument("--json", default=None)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    sizes = [2.0] if args.quick else [float(s) for s in args.sizes_mib.split(",")]
    repeats = 2 if args.quick else args.repeats
    writers = {"lightning": TorchCheckpointIO(), "lrc durable": DurableCheckpointIO()}
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir or ".") as folder:
        for mib in sizes:
            ckpt = state(mib)
            times: dict[str, list[float]] = {name: [] for name in writers}
            for _ in range(repeats):
                for name, io in writers.items():  # interleaved: both see the same disk and page cache state
                    path = Path(folder) / f"{name.replace(' ', '_')}.ckpt"
                    t0 = time.perf_counter()
                    io.save_checkpoint(ckpt, path)
                    times[name].append(time.perf_counter() - t0)
            med = {name: statistics.median(t) for name, t in times.items()}
            rows.append({"size_mib": mib, **{f"{k}_s": round(v, 4) for k, v in med.items()},
                         "ratio": round(med["lrc durable"] / med["lightning"], 2)})
    load = os.getloadavg()
    print(f"| checkpoint MiB | Lightning default s | lrc durable s | ratio |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['size_mib']:g} | {r['lightning_s']} | {r['lrc durable_s']} | {r['ratio']} |")
    print(f"\nmedians of {repeats} interleaved repetitions; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "load": load}, indent=2))


if __name__ == "__main__":
    main()
