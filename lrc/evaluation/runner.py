"""Running a benchmark: each item's video sampled, asked and scored; predictions appended as they are made;
several processes each taking a share; rank 0 merging them into the results.

OUT holds::

    settings.json            what the predictions were made with (a resumed run must match it)
    predictions.jsonl        one line per item, flushed and fsynced as it is written (one process)
    predictions.rank<R>.jsonl  the same, per rank, when several processes share the benchmark
    results.json             overall, per category, every prediction (rank 0, once every item has its line)
    results.md, results.png  the table and the plot
    metrics.json             eval/<benchmark>/... figures, flat (what ``lrc ablate`` tables read)

Resuming: running the same command again skips every item that has a line in any predictions file of OUT (a
line cut off by a kill is dropped first), so a stopped evaluation, or one re-run with another number of
processes, goes on where it was.

Several processes (``torchrun --nproc-per-node N -m lrc.cli eval ...``, or srun): the rank and the world size
come from the launcher's environment (RANK / WORLD_SIZE, SLURM_PROCID / SLURM_NTASKS); no process group is
needed. Item ``i`` of the benchmark is rank ``i % W``'s. Each rank writes its own predictions file; rank 0, when
its share is done, waits until every item has a line (from any file), then writes the results. A rank that dies
leaves its items missing: rank 0 gives up after ``stall_timeout_s`` without a new line and says to re-run
(which resumes).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lrc.config.schema import EVAL_SAMPLERS  # uniform: the benchmark's count; config: the model's data.sampler
from lrc.errors import LrcError
from lrc.evaluation.benchmark import GROUNDING, Benchmark
from lrc.evaluation.items import Item
from lrc.evaluation.scoring import flat_metrics, score_grounding, score_mcq, summarize
from lrc.files import append_jsonl

log = logging.getLogger("lrc")


class EvalRunError(LrcError, RuntimeError):
    """An evaluation that cannot go on as asked (another run's predictions in OUT, a rank that stopped)."""


@dataclass
class Settings:
    """How a benchmark is run; what settings.json records."""

    num_frames: int | None = None  # None: the benchmark's reference count (with sampler uniform)
    sampler: str = "uniform"  # uniform | config
    subtitles: bool = False  # Video-MME with subtitles
    max_new_tokens: int | None = None  # None: the benchmark's reference limit
    limit: int | None = None  # at most this many items, drawn in turn from each category

    def resolved(self, bench: Benchmark) -> dict[str, Any]:
        out = asdict(self)
        out["num_frames"] = None if self.sampler == "config" else self.num_frames or bench.num_frames
        out["max_new_tokens"] = self.max_new_tokens or bench.max_new_tokens
        return out


@dataclass
class BenchResult:
    label: str
    out: Path
    metrics: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    written: int = 0  # predictions this process wrote
    merged: bool = False  # this process wrote the results (rank 0)


# ---------------------------------------------------------------------------------------------
# Which items, and which are this rank's
# ---------------------------------------------------------------------------------------------
def launch_rank() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment: torchrun's RANK / WORLD_SIZE, srun's SLURM_PROCID /
    SLURM_NTASKS; (0, 1) for a single process."""
    from lrc.parallel.distributed import launch_world_size

    world = launch_world_size()
    if "RANK" in os.environ:
        return int(os.environ["RANK"]), world
    if "SLURM_PROCID" in os.environ and world > 1:
        return int(os.environ["SLURM_PROCID"]), world
    return 0, world


def select(items: list[Item], limit: int | None) -> list[Item]:
    """The first ``limit`` items taken in turn from each category (so a small run still covers every category),
    in the benchmark's order; all of them without a limit."""
    if limit is None or limit >= len(items):
        return items
    queues: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        queues.setdefault(item.category, []).append(i)
    chosen: list[int] = []
    while len(chosen) < limit:
        for queue in queues.values():
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    return [items[i] for i in sorted(chosen)]


# ---------------------------------------------------------------------------------------------
# Prediction files
# ---------------------------------------------------------------------------------------------
def predictions_file(out: Path, rank: int, world: int) -> Path:
    return out / ("predictions.jsonl" if world == 1 else f"predictions.rank{rank}.jsonl")


def read_predictions(out: Path) -> dict[str, dict[str, Any]]:
    """Every complete line of every predictions file in ``out``, by item id (the first line of an id wins). A
    line still being written (no newline yet) is not read."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(out.glob("predictions*.jsonl")):
        data = path.read_bytes()
        for line in data[: data.rfind(b"\n") + 1].splitlines():
            if line.strip():
                row = json.loads(line)
                found.setdefault(str(row["id"]), row)
    return found


def _check_settings(out: Path, recorded: dict[str, Any], restart: bool) -> None:
    from lrc.files import write_json

    path = out / "settings.json"
    if path.is_file() and not restart:
        before = json.loads(path.read_text())
        keys = [k for k in recorded if k != "limit" and before.get(k) != recorded[k]]
        if keys:
            shown = "; ".join(f"{k}: {before.get(k)!r} there, {recorded[k]!r} now" for k in keys)
            raise EvalRunError(f"{out} holds predictions made with other settings ({shown}); pass another --out, or "
                               "--restart to start it over")
        return
    write_json(path, recorded)


# ---------------------------------------------------------------------------------------------
# One item
# ---------------------------------------------------------------------------------------------
def sample_video(item: Item, sampler: Any, image_size: int, timeout_s: float | None) -> Any:
    """The item's frames as :class:`lrc.inference.chat.Video`: ``sampler`` over the whole video, or over its
    segment (``item.start`` / ``item.end``, sampled as a video of its own, as lrc's dataset samples a record's
    segment), resized to the encoder's ``image_size``."""
    import numpy as np

    from lrc.data.media import native_size, open_video, segment_frames
    from lrc.inference.chat import Video

    with open_video(item.video, size=image_size, timeout_s=timeout_s, fps=item.fps) as video:
        if item.start is None and item.end is None:
            indices, timestamps = sampler(video.num_frames, video.fps, video.duration)
            duration = float(video.duration)
        else:
            lo, hi = segment_frames(video.num_frames, video.fps, item.start, item.end, item.video)
            duration = (hi - lo) / video.fps
            indices, timestamps = sampler(hi - lo, video.fps, duration)
            indices = np.asarray(indices) + lo
        frames = video.get_frames(indices)
    size = native_size(item.video)
    return Video(np.ascontiguousarray(frames), np.asarray(timestamps, dtype=np.float64), duration,
                 (size[1], size[0]) if size else None, np.asarray(indices))


def answer(chat: Any, bench: Benchmark, item: Item, sampler: Any, max_new_tokens: int) -> dict[str, Any]:
    """The prediction line of one item: the item, the answer's text and its score (or the ``error`` that kept it
    from being asked: an unreadable video, a prompt too long)."""
    from lrc.data.video import VideoReadError
    from lrc.inference.chat import InferenceError

    line = item.describe()
    t0 = time.perf_counter()
    try:
        if not item.video.exists():
            raise InferenceError(f"video {item.video} does not exist")
        video = sample_video(item, sampler, chat.model.encoder.image_size, chat.cfg["data"].get("read_timeout_s"))
        result = chat.chat(video, bench.prompt(item, [float(t) for t in video.timestamps]),
                           max_new_tokens=max_new_tokens)
    except (InferenceError, VideoReadError) as exc:
        line["error"] = str(exc)
        line.update(score_mcq(item, "") if bench.kind != GROUNDING else {"text_span": None, "text_iou": 0.0})
        log.warning("%s %s: %s", bench.name, item.id, exc)
        return line
    line["prediction"] = result.text
    if bench.kind == GROUNDING:
        spans = [(s.start, s.end) for s in result.spans]
        line.update(score_grounding(item, result.text, spans))
        if spans:
            line["head_spans"] = [[round(a, 3), round(b, 3)] for a, b in spans[:3]]
    else:
        line.update(score_mcq(item, result.text))
    line["frames"] = len(video.timestamps)
    line["seconds"] = round(time.perf_counter() - t0, 3)
    return line


# ---------------------------------------------------------------------------------------------
# A benchmark
# ---------------------------------------------------------------------------------------------
def run(chat: Any, bench: Benchmark, data: Path, out: Path, settings: Settings, *, model: str = "",
        restart: bool = False, progress: bool = True, stall_timeout_s: float = 1800.0) -> BenchResult:
    """Evaluate ``chat`` (a :class:`lrc.inference.chat.VideoChat`) on ``bench`` read from ``data`` into ``out``;
    this process's share when several run it (see the module docstring). Rank 0 returns the merged results."""
    from lrc.registry import SAMPLERS as SAMPLER_REGISTRY

    rank, world = launch_rank()
    label = bench.label(settings.subtitles)
    if settings.subtitles and not bench.subtitles:
        raise EvalRunError(f"--subtitles: {bench.name} has no subtitles setting (only videomme has)")
    if settings.sampler not in EVAL_SAMPLERS:
        raise EvalRunError(f"--sampler {settings.sampler!r}: use uniform (the benchmark's frame count, or "
                           "--num-frames) or config (the model's own data.sampler)")
    if restart and world > 1:
        raise EvalRunError(f"--restart with {world} processes: delete {out} instead (one process cannot tell when "
                           "the others have read it)")
    items = select(bench.read(Path(data), settings.subtitles), settings.limit)
    if not any(item.video.exists() for item in items):
        raise EvalRunError(f"none of the {len(items)} {bench.name} videos is where its layout puts them (e.g. "
                           f"{items[0].video}); check --data (docs/evaluation.md, '{bench.name}')")
    recorded = {"benchmark": label, "data": str(Path(data).resolve()), "model": model,
                **settings.resolved(bench)}
    out.mkdir(parents=True, exist_ok=True)
    mine = predictions_file(out, rank, world)
    if restart:
        for path in [*out.glob("predictions*.jsonl"), *(out / n for n in ("results.json", "results.md", "metrics.json"))]:
            path.unlink(missing_ok=True)
    _check_settings(out, recorded, restart)
    from lrc.inference.batch import finished_ids

    finished_ids(mine)  # drops a line a kill cut off
    done = set(read_predictions(out))
    todo = [item for i, item in enumerate(items) if i % world == rank and item.id not in done]
    sampler = (chat.sampler(None) if settings.sampler == "config"
               else SAMPLER_REGISTRY.get("uniform")(num_frames=recorded["num_frames"]))
    result = BenchResult(label=label, out=out)
    bar = _bar(len(todo), f"lrc eval {label}" + (f" [rank {rank}/{world}]" if world > 1 else ""), progress)
    with mine.open("a", encoding="utf-8") as fh:
        for item in todo:
            append_jsonl(fh, answer(chat, bench, item, sampler, recorded["max_new_tokens"]))
            result.written += 1
            bar.update(1)
    bar.close()
    if rank != 0:
        log.info("rank %d: %d prediction(s) written to %s; rank 0 writes the results", rank, result.written, mine)
        return result
    lines = _wait_for_all(out, items, stall_timeout_s)
    result.summary = summarize(bench, lines)
    result.metrics = flat_metrics(label, bench, result.summary)
    write_results(out, bench, label, recorded, result.summary, lines, result.metrics)
    result.merged = True
    return result


def _wait_for_all(out: Path, items: list[Item], stall_timeout_s: float) -> list[dict[str, Any]]:
    """Every item's line, in the benchmark's order, once the other ranks have written theirs."""
    wanted = [item.id for item in items]
    seen, last_change = -1, time.monotonic()
    while True:
        found = read_predictions(out)
        missing = [i for i in wanted if i not in found]
        if not missing:
            return [found[i] for i in wanted]
        if len(found) != seen:
            seen, last_change = len(found), time.monotonic()
        elif time.monotonic() - last_change > stall_timeout_s:
            raise EvalRunError(f"{len(missing)} of {len(wanted)} items have no prediction in {out} and none came for "
                               f"{stall_timeout_s:.0f} s (e.g. {missing[0]}): did a rank stop? Run the same command "
                               "again: it resumes")
        time.sleep(1.0)


def write_results(out: Path, bench: Benchmark, label: str, settings: dict[str, Any], summary: dict[str, Any],
                  lines: list[dict[str, Any]], metrics: dict[str, float]) -> None:
    from lrc.evaluation.report import markdown, plot
    from lrc.files import write_json, write_text

    doc = {"benchmark": label, "kind": bench.kind, "reference": bench.reference, "settings": settings,
           "counts": {"items": len(lines), "errors": summary["overall"]["errors"]},
           "overall": summary["overall"], "breakdown": summary["breakdown"], "predictions": lines}
    write_json(out / "results.json", doc)
    figure = plot(out / "results.png", bench, label, summary)
    write_text(out / "results.md", markdown(bench, label, settings, summary, figure))
    write_json(out / "metrics.json", metrics)


def _bar(total: int, desc: str, enabled: bool) -> Any:
    """A progress bar on a terminal (a log file, e.g. eval.after_fit's in an ablation cell, gets none)."""
    if enabled and sys.stderr.isatty():
        try:
            from tqdm import tqdm

            return tqdm(total=total, desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True)
        except ImportError:  # tqdm comes with transformers; without it, no bar
            pass

    class Quiet:
        def update(self, _: int) -> None: ...

        def close(self) -> None: ...
    return Quiet()
