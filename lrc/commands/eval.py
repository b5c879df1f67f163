"""``lrc eval PATH --bench NAME --data DIR``: a model on a standard video benchmark (docs/evaluation.md).

    lrc eval PATH --bench mvbench|videomme|longvideobench|mlvu|charades_sta --data DIR [--limit N] [--out DIR]
             [--num-frames N] [--sampler uniform|config] [--subtitles] [--max-new-tokens N] [key=value ...]
    lrc eval RUN_DIR                              every benchmark of the run's eval.benches
    lrc eval CONFIG --ckpt WEIGHTS --out DIR      the same for a config and a weights file (eval.after_fit)

PATH is what ``lrc.load`` reads (a run dir, an ``lrc export`` folder, an InternVL2.5 / InternVideo2.5 folder).
Without ``--bench`` the benchmarks are the model config's ``eval.benches``, each into OUT/<benchmark>/, and
OUT/metrics.json gathers their ``eval/*`` figures: that is what ``lrc fit`` runs after training with
``eval.after_fit: true`` (lrc/train/run.py run_after_fit), so benchmark accuracy becomes an ``lrc ablate`` column.
The work itself — reading the benchmark, asking, scoring, resuming, sharding over ranks, the report — is
lrc/evaluation/.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lrc.config import ConfigError

log = logging.getLogger("lrc")


def _default_out(path: Path, label: str) -> Path:
    """A run keeps its evaluations (RUN/eval/<benchmark>, for PATH the run dir, its config.yaml or a checkpoint in
    it); anything else goes under runs/eval/<PATH's name>/."""
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent if path.is_file() else path
    if (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints").is_dir():
        return run_dir / "eval" / label
    return Path("runs") / "eval" / path.stem / label


def _device(device: str) -> str:
    """``auto`` under a multi-process launch with CUDA: this rank's GPU (LOCAL_RANK)."""
    import os

    import torch

    if device == "auto" and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def _ensure_synthetic(bench: dict[str, Any]) -> None:
    """``synth_videos`` on an mvbench entry: write the synthetic MVBench-format set when its folder is missing."""
    from lrc.parallel.distributed import is_launch_rank_zero, wait_for_files

    data = Path(bench["data"])
    if bench.get("synth_videos") is None or (data / "json").is_dir():
        return
    from lrc.data.synth.bench import TASKS, synthesize_mvbench

    if is_launch_rank_zero():
        log.info("writing the synthetic MVBench-format set (%d videos) into %s", bench["synth_videos"], data)
        synthesize_mvbench(data, videos=bench["synth_videos"])
    else:
        wait_for_files([data / "json" / f"{t}.json" for t in TASKS], "the synthetic MVBench-format set")


def run(path: str, bench: str | None = None, data: str | None = None, *, out: str | None = None,
        limit: int | None = None, num_frames: int | None = None, sampler: str = "uniform", subtitles: bool = False,
        max_new_tokens: int | None = None, ckpt: str | None = None, restart: bool = False, progress: bool = True,
        device: str = "auto", dtype: str | None = None, overrides: list[str] | None = None) -> int:
    from lrc.evaluation import get
    from lrc.evaluation.runner import Settings, launch_rank
    from lrc.evaluation.runner import run as run_bench
    from lrc.files import write_json
    from lrc.inference.loading import load

    source = Path(path)
    if bench is not None and data is None:
        raise ConfigError([f"command line: --bench {bench} needs --data DIR, the benchmark's folder "
                           "(docs/evaluation.md says where to get each)"])
    if bench is None and data is not None:
        raise ConfigError(["command line: --data goes with --bench NAME"])
    if bench is not None:  # checked and read before the model is loaded: a wrong folder is found at once
        if subtitles and not get(bench).subtitles:
            raise ConfigError([f"command line: --subtitles: {bench} has no with-subtitles setting (videomme has)"])
        get(bench).read(Path(data), subtitles)  # type: ignore[arg-type]
    chat = load(source, device=_device(device), dtype=dtype, overrides=overrides or [], weights=ckpt)
    if bench is not None:
        benches = [{"name": bench, "data": data, "limit": limit, "num_frames": num_frames, "sampler": sampler,
                    "subtitles": subtitles, "max_new_tokens": max_new_tokens}]
    else:
        benches = list(chat.cfg.get("eval", {}).get("benches") or [])
        if not benches:
            raise ConfigError([f"{source}: its config lists no benchmark (eval.benches); pass --bench NAME --data DIR"])
        for b in benches:  # --limit, --num-frames, --max-new-tokens apply to every listed benchmark
            b.update({k: v for k, v in (("limit", limit), ("num_frames", num_frames), ("max_new_tokens",
                                                                                       max_new_tokens)) if v is not None})
    rank, _ = launch_rank()
    metrics: dict[str, float] = {}
    lines = []
    for b in benches:
        spec = get(b["name"])
        _ensure_synthetic(b)
        label = spec.label(bool(b.get("subtitles")))
        if out is None:
            target = _default_out(source, label)
        else:  # one benchmark asked for: OUT itself; the config's list: OUT/<benchmark> each
            target = Path(out) if bench is not None else Path(out) / label
        settings = Settings(num_frames=b.get("num_frames"), sampler=b.get("sampler") or "uniform",
                            subtitles=bool(b.get("subtitles")), max_new_tokens=b.get("max_new_tokens"),
                            limit=b.get("limit"))
        result = run_bench(chat, spec, Path(b["data"]), target, settings, model=str(source), restart=restart,
                           progress=progress)
        metrics.update(result.metrics)
        if result.merged:
            lines.append(_summary_line(label, spec, result))
    if rank != 0:
        return 0
    if out and bench is None:
        write_json(Path(out) / "metrics.json", metrics)  # every benchmark's figures in one file (eval.after_fit)
    print("\n".join(lines))
    return 0


def _summary_line(label: str, spec: Any, result: Any) -> str:
    overall = result.summary["overall"]
    if spec.kind == "mcq":
        mean = f", mean over {spec.category}s {100 * overall['mean_acc']:.1f}%" if overall.get("mean_acc") is not None \
            else ""
        figures = (f"accuracy {100 * (overall['acc'] or 0):.1f}%{mean} over {overall['total']} items, "
                   f"{overall['unparsed']} unparsed answer(s)")
    else:
        text = overall["text"]
        figures = (f"R1@0.3/0.5/0.7 {100 * text['r1@0.3']:.1f}/{100 * text['r1@0.5']:.1f}/{100 * text['r1@0.7']:.1f}%, "
                   f"mIoU {100 * text['miou']:.1f}% over {text['total']} items")
        if "head" in overall:
            figures += f"; temporal head mIoU {100 * overall['head']['miou']:.1f}%"
    errors = f", {overall['errors']} unreadable" if overall["errors"] else ""
    return f"{label}: {figures}{errors}; results in {result.out / 'results.md'}"
