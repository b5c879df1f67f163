"""A short fit alone and beside CPU-bound competitors: how much a shared machine slows training, against its share.

What. ``lrc fit experiments/demo/tiny.yaml`` for ``--steps`` optimizer steps on a small synthetic corpus (made
once in ``--cache``), run as the ``lrc`` command runs it (a fresh ``python -m lrc.cli`` process), in two thread
settings:

* ``now``: lrc's defaults — ``run.threads`` = the CPUs this process may use, OpenMP threads that sleep while
  they wait (the ``lrc`` command sets ``OMP_WAIT_POLICY=PASSIVE``), decoding in a DataLoader worker;
* ``spin``: the same, but with GNU OpenMP's default spinning restored (``GOMP_SPINCOUNT=300000``, what libgomp
  uses when ``OMP_WAIT_POLICY`` is unset): how lrc ran before (its ``num_workers: 0`` aside).

Each setting runs alone and beside ``--competitors`` processes that each keep one CPU busy (a pure-Python loop),
in a rotating order. The figure is the fit's own training time (``train/time_s`` of metrics.json; start-up and
the final evaluation excluded). A setting's slowdown is its time beside the competitors over the fastest time
alone of any setting (what the machine can do). The **machine share** predicts the slowdown a fair scheduler
allows: the fit's threads and the competitors share the CPUs, so with ``T`` threads, ``C`` competitors and ``P``
CPUs the fit gets ``P / (T + C)`` of a CPU per thread where it had one, a predicted slowdown of ``(T + C) / P``
(at least 1). The table gives each slowdown, that prediction, and their ratio ("× share": 1 is exactly the
share; the goal is at most ~2.5), with the load average before and after (the machine is shared with other
work, so "alone" means without our competitors, not idle).

    python benchmarks/threads_contention.py                   # 150 steps, 1 competitor
    python benchmarks/threads_contention.py --quick           # 30 steps
    python benchmarks/threads_contention.py --competitors 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import add_output_args, load_average, markdown_table, read_json, write_json

from lrc.cpus import available_cpus

BENCHMARK = "threads_contention"
ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "experiments" / "demo" / "tiny.yaml"
SETTINGS = {"now": {}, "spin": {"GOMP_SPINCOUNT": "300000"}}
BURN = "import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass\n"


def fit(setting: str, args: argparse.Namespace, out: Path) -> dict:
    """One fit in a fresh process; its metrics.json plus the wall time of the whole command."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env.update(SETTINGS[setting])
    overrides = [f"data.root={args.cache}/threads-corpus", f"data.synth_videos={args.videos}",
                 f"trainer.max_steps={args.steps}", "trainer.max_epochs=-1", "trainer.limit_val_batches=2",
                 "trainer.enable_progress_bar=false", "run.checkpoint_every_minutes=null",
                 "distributed.accelerator=cpu", *args.overrides]
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lrc.cli", "fit", str(DEMO), "--out", str(out), *overrides],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"the {setting} fit failed ({done.returncode}):\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"train_s": metrics["train/time_s"], "wall_s": round(wall, 1), "steps": metrics["train/steps"],
            "wait_fraction": metrics.get("data/wait_fraction")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per fit (default 150; 30 with --quick)")
    p.add_argument("--videos", type=int, default=96, help="videos in the synthetic corpus")
    p.add_argument("--competitors", type=int, default=1, help="CPU-bound processes beside the contended fits")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "lrc" / "benchmarks"))
    p.add_argument("--quick", action="store_true", help="30 steps")
    add_output_args(p)
    p.add_argument("overrides", nargs="*", help="more key=value overrides for the fits (e.g. run.threads=1)")
    args = p.parse_args()
    if args.from_json:
        print(table(read_json(args.from_json, BENCHMARK)))
        return
    args.steps = args.steps or (30 if args.quick else 150)
    settings = [s for s in args.settings.split(",") if s]
    cpus = available_cpus()
    threads = next((int(o.split("=", 1)[1]) for o in args.overrides if o.startswith("run.threads=")), cpus)
    Path(args.cache).mkdir(parents=True, exist_ok=True)

    load = [load_average()]
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="lrc-threads-") as tmp:
        fit(settings[0], argparse.Namespace(**{**vars(args), "steps": 2}), Path(tmp) / "warm")  # corpus, caches
        order = [(s, c) for c in (False, True) for s in settings]
        for rep in range(args.repeats):
            for i, (setting, contended) in enumerate(order[rep % len(order):] + order[:rep % len(order)]):
                burners = []
                if contended:  # started a moment before the fit, stopped right after it
                    code = BURN.format(seconds=3600)
                    burners = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(args.competitors)]
                    time.sleep(0.5)
                try:
                    result = fit(setting, args, Path(tmp) / f"{rep}-{i}")
                finally:
                    for b in burners:
                        b.kill()
                        b.wait()
                key = f"{setting}/{'beside' if contended else 'alone'}"
                runs.setdefault(key, []).append(result)
                print(f"{key}: {result}", file=sys.stderr, flush=True)
    load.append(load_average())

    result = {"steps": args.steps, "threads": threads, "cpus": cpus, "competitors": args.competitors,
              "repeats": args.repeats, "settings": settings, "load_average": load, "runs": runs}
    print(table(result))
    if args.json:
        write_json(args.json, BENCHMARK, result)


def rows(result: dict) -> list[dict]:
    """Per setting: its best training time alone and beside the competitors, the slowdown of the latter against
    the fastest run alone of any setting (what the machine can do), the slowdown the machine share predicts,
    and their ratio."""
    predicted = max(1.0, (result["threads"] + result["competitors"]) / result["cpus"])
    best = {key: min(r["train_s"] for r in runs) for key, runs in result["runs"].items()}
    fastest_alone = min(best[f"{s}/alone"] for s in result["settings"])
    out = []
    for s in result["settings"]:
        slowdown = best[f"{s}/beside"] / fastest_alone
        out.append({"setting": s, "alone_s": best[f"{s}/alone"], "beside_s": best[f"{s}/beside"],
                    "slowdown": round(slowdown, 2), "share_slowdown": round(predicted, 2),
                    "times_share": round(slowdown / predicted, 2),
                    "wait_fraction": [result["runs"][f"{s}/alone"][0]["wait_fraction"],
                                      result["runs"][f"{s}/beside"][0]["wait_fraction"]]})
    return out


def table(result: dict) -> str:
    """The Markdown of a result (what --json writes): a function of it alone."""
    before, after = result["load_average"]
    lines = [f"lrc fit of the demo model, {result['steps']} steps, {result['threads']} thread(s) on {result['cpus']} "
             f"CPU(s), {result['competitors']} CPU-bound competitor(s); training time (train/time_s), best of "
             f"{result['repeats']}; load average {before:.2f} before, {after:.2f} after", ""]
    header = ["setting", "alone s", "beside competitors s", "slowdown (against the fastest alone)",
              "share predicts", "× share", "data wait alone / beside"]
    lines += markdown_table(header, ([r["setting"], r["alone_s"], r["beside_s"], r["slowdown"], r["share_slowdown"],
                                      r["times_share"], " / ".join(str(w) for w in r["wait_fraction"])]
                                     for r in rows(result)), "lrrrrrl")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
