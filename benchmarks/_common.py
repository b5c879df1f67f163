"""What the paired benchmarks share: interleaved timing, medians and ratios, the machine's state, the JSON file.

The convention every ``benchmarks/*.py`` follows (``make bench`` runs them all, ``make bench-quick`` with
``--quick``): it prints Markdown on stdout (progress on stderr), ``--quick`` shrinks it to a smoke run,
``--json PATH`` keeps what it measured, and — for the scripts built on this module — ``--from-json PATH``
prints the same Markdown again from such a file without measuring anything: each script's table is a
function of its JSON alone.

Why paired: the machines here are shared, and another job can make one run 2–3× slower than the next. Variants
timed one after the other in separate runs compare different machine states; run interleaved in one process
(every repetition runs each variant once), the noise hits them alike, and the median of the per-repetition
ratios to a baseline is the figure that survives it. The load average before and after says how busy the
machine was.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """``--json`` and ``--from-json``, the same in every script."""
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results to this JSON file")
    parser.add_argument("--from-json", default=None, metavar="PATH",
                        help="print the tables of a file written by --json, measuring nothing")


def load_average() -> float:
    """The 1-minute load average (runnable processes, all users), rounded for the tables."""
    return round(os.getloadavg()[0], 2)


def paired(variants: dict[str, Callable[[], object]], repeats: int,
           progress: bool = False) -> tuple[dict[str, list[float]], list[float]]:
    """Times every variant ``repeats`` times, interleaved: one untimed warm-up round, then ``repeats`` rounds each
    running every variant once, round r starting at the (r mod n)-th variant, so that no variant always runs first.
    Returns the seconds per variant (in repetition order: the i-th times of two variants form a pair) and the load
    average before and after. ``progress``: a line on stderr before each timed run (for runs of minutes)."""
    names = list(variants)
    for name in names:
        variants[name]()
    load = [load_average()]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if progress:
                print(f"... repetition {r + 1}/{repeats}: {name}", file=sys.stderr, flush=True)
            began = time.perf_counter()
            variants[name]()
            seconds[name].append(time.perf_counter() - began)
    load.append(load_average())
    return seconds, load


def median_ratio(seconds: Sequence[float], baseline: Sequence[float]) -> float:
    """The median over repetitions of seconds / baseline seconds (both from the same :func:`paired` call)."""
    return statistics.median(a / b for a, b in zip(seconds, baseline, strict=True))


def machine(load: Sequence[float], repeats: int) -> dict:
    """What the tables say about the run: date, threads, torch, the load average before and after, repetitions."""
    import torch

    return {"date": datetime.date.today().isoformat(), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "load_average": list(load), "repeats": repeats}


def describe_run(m: dict) -> str:
    """One sentence about the run of :func:`machine`'s dict."""
    before, after = m["load_average"]
    threads = f"{m['threads']} thread{'' if m['threads'] == 1 else 's'}"
    return (f"{m['repeats']} paired repetitions (interleaved, rotating order, after one warm-up round), medians; "
            f"{threads}, torch {m['torch']}; load average {before:.2f} before, {after:.2f} after; {m['date']}.")


def write_json(path: str | os.PathLike, benchmark: str, result: dict) -> None:
    """``result`` with the script's name as ``"benchmark"`` (what :func:`read_json` checks), written atomically;
    keys keep their order (a table may follow it)."""
    from lrc.files import write_text

    write_text(path, json.dumps({"benchmark": benchmark, **result}, indent=1) + "\n")


def read_json(path: str | os.PathLike, benchmark: str) -> dict:
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"--from-json {path}: cannot read it ({e})") from None
    found = result.get("benchmark") if isinstance(result, dict) else None
    if found != benchmark:
        raise SystemExit(f"--from-json {path}: written by benchmark {found!r}, not {benchmark!r}; "
                         f"run `python benchmarks/{found}.py --from-json {path}` instead" if found else
                         f"--from-json {path}: not a file written by `benchmarks/{benchmark}.py --json`")
    return result


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> list[str]:
    """The lines of a Markdown table; ``align`` has one letter per column, ``r`` for right-aligned (numbers)."""
    rule = ["---:" if a == "r" else "---" for a in align.ljust(len(header), "l")]
    return ["| " + " | ".join(line) + " |" for line in (header, rule, *([str(c) for c in r] for r in rows))]
