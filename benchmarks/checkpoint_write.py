"""What a durable checkpoint write costs: lrc's DurableCheckpointIO (temporary file in the same folder, flushed,
fsynced, renamed, folder fsynced) against Lightning's default TorchCheckpointIO (serialised into memory, written
through fsspec: a temporary file in the system's temp folder, then moved), on checkpoints of several sizes.

The two are interleaved in one process (benchmarks/_common.py: one warm-up round, then every repetition writes
with each once, the order rotating), each writing to the same folder; the table gives the median seconds of each,
the median of the per-repetition ratios and the machine's load average before and after. A checkpoint here is a plain
state dict of float32 tensors, the bulk of what a Lightning checkpoint holds (weights + AdamW's two moments).

    python benchmarks/checkpoint_write.py [--sizes-mib 2,64,512] [--repeats 7] [--dir DIR] [--json PATH] [--quick]
    python benchmarks/checkpoint_write.py --from-json PATH     # the table of a --json file again
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import add_output_args, markdown_table, median_ratio, paired, read_json, write_json  # noqa: E402

BENCHMARK = "checkpoint_write"


def state(mib: float) -> dict[str, torch.Tensor]:
    n = int(mib * 2**20 / 4)
    chunk = 2**20
    return {f"w{i}": torch.randn(min(chunk, n - i * chunk)) for i in range((n + chunk - 1) // chunk)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-mib", default="2,64,512")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--dir", default=None, help="where to write (default: a temporary folder under the cwd)")
    p.add_argument("--quick", action="store_true")
    add_output_args(p)
    args = p.parse_args()
    if args.from_json:
        print(table(read_json(args.from_json, BENCHMARK)))
        return
    # imported here, not above: Lightning takes seconds to import, and --from-json needs none of it
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from lrc.train.checkpointing import DurableCheckpointIO

    sizes = [2.0] if args.quick else [float(s) for s in args.sizes_mib.split(",")]
    repeats = 2 if args.quick else args.repeats
    writers = {"lightning": TorchCheckpointIO(), "lrc durable": DurableCheckpointIO()}
    rows, loads = [], []
    with tempfile.TemporaryDirectory(dir=args.dir or ".") as folder:
        for mib in sizes:
            ckpt = state(mib)
            # both write to the same folder, so both see the same disk and page cache state
            saves = {name: partial(io.save_checkpoint, ckpt, Path(folder) / f"{name.replace(' ', '_')}.ckpt")
                     for name, io in writers.items()}
            times, load = paired(saves, repeats)
            loads.append(load)
            rows.append({"size_mib": mib, **{f"{k}_s": round(statistics.median(v), 4) for k, v in times.items()},
                         "ratio": round(median_ratio(times["lrc durable"], times["lightning"]), 2)})
    result = {"rows": rows, "repeats": repeats, "load_average": [loads[0][0], loads[-1][1]]}
    print(table(result))
    if args.json:
        write_json(args.json, BENCHMARK, result)


def table(result: dict) -> str:
    """The Markdown of a result (what --json writes): a function of it alone."""
    before, after = result["load_average"]
    lines = markdown_table(["checkpoint MiB", "Lightning default s", "lrc durable s", "ratio (median of pairs)"],
                           [[f"{r['size_mib']:g}", r["lightning_s"], r["lrc durable_s"], r["ratio"]]
                            for r in result["rows"]])
    lines += ["", f"medians of {result['repeats']} interleaved repetitions; load average {before:.2f} before, "
                  f"{after:.2f} after"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
