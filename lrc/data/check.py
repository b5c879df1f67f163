"""``lrc data check``: read a corpus (any annotation format, or a mixture) and try every video and image.

    lrc data check data/mix/train.json data/mix/chat.jsonl --report check.json --workers 4
    lrc data check --config experiments/demo/mixture.yaml        # the config's data.train and data.val

Each distinct medium is opened the way training opens it (the same readers, frame size and time limit):
a video file, a frame folder or a GIF has its first, middle and last frame decoded; an image is decoded.
The last frame matters: a truncated file usually still opens, with the frame count of its header, and only
fails (or, with some decord versions, hangs) when the decoder reaches the missing end. A full decode would
catch a corrupt packet in between as well, but costs as much as an epoch; three frames keep the check at
about the cost of opening the files.

The media are checked by ``workers`` processes in parallel (each read is still bounded by the time limit),
with a progress bar on a terminal. The summary counts the records and media, the readable and unreadable
ones by reason, and the spread of durations, frame rates and resolutions; the report (``--report FILE``)
holds the same as JSON, and ``bad`` there lists one ``{id, video, reason}`` per record whose media cannot
be read, in the format of a run's ``skipped.json``.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from lrc.config.schema import DataConfig
from lrc.data.annotations import Record
from lrc.data.media import Skipped, native_size, open_video, read_image
from lrc.data.mixture import Source, load_split
from lrc.data.video import VideoReadError

KINDS = ("video", "frames", "gif", "image")  # media kinds as the summary counts them


@dataclass
class CheckResult:
    records: int = 0
    videos: int = 0  # distinct media checked (video files, frame folders, GIFs, images)
    bad_videos: dict[str, str] = field(default_factory=dict)  # media path -> reason
    skipped: list[Skipped] = field(default_factory=list)  # one per record whose media is bad
    seconds: float = 0.0
    info: dict[str, dict[str, Any]] = field(default_factory=dict)  # media path -> what the probe found
    sources: list[dict[str, Any]] = field(default_factory=list)  # per source: what it gave, and its bad records
    workers: int = 1

    def reasons(self) -> Counter:
        """Bad media per kind of reason: the reason up to its first colon ("decode failed",
        "timed out after 30s", "zero bytes"), since the rest names the decoder's own words."""
        return Counter(reason.split(":")[0] for reason in self.bad_videos.values())

    def kinds(self) -> Counter:
        return Counter(i["kind"] for i in self.info.values())

    def spread(self) -> dict[str, Any]:
        """min / median / max (and mean) of the readable media's duration, fps (videos, folders, GIFs) and
        resolution (all), and the most common resolutions."""
        good = [i for i in self.info.values() if i.get("ok")]
        timed = [i for i in good if i["kind"] != "image"]

        def stats(values: list[float]) -> dict[str, float] | None:
            if not values:
                return None
            return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
                    "max": round(max(values), 3), "mean": round(statistics.fmean(values), 3)}

        sized = [i for i in good if i.get("width")]
        return {
            "duration_s": stats([i["duration"] for i in timed]),
            "fps": stats([i["fps"] for i in timed]),
            "frames": stats([float(i["frames"]) for i in timed]),
            "resolution": {
                "most_common": [[f"{w}x{h}", n] for (w, h), n in
                                Counter((i["width"], i["height"]) for i in sized).most_common(5)],
                "width": stats([float(i["width"]) for i in sized]),
                "height": stats([float(i["height"]) for i in sized]),
            },
        }

    def summary(self) -> str:
        kinds = self.kinds()
        named = {"video": "video files", "frames": "frame folders", "gif": "GIFs", "image": "images"}
        what = ", ".join(f"{kinds[k]} {named[k]}" for k in KINDS if kinds[k])
        lines = [f"{self.records} records, {self.videos} media ({what or 'none'}) checked in {self.seconds:.1f}s "
                 f"with {self.workers} worker(s): {self.videos - len(self.bad_videos)} readable, "
                 f"{len(self.bad_videos)} unreadable video(s)/image(s), used by {len(self.skipped)} record(s)"]
        for kind, n in self.reasons().most_common():
            lines.append(f"  {n:5d}  {kind}")
        spread = self.spread()
        for key, label, unit in (("duration_s", "duration", " s"), ("fps", "fps", ""), ("frames", "frames", "")):
            st = spread[key]
            if st:
                lines.append(f"{label:10s} min {st['min']:g}{unit}  median {st['median']:g}{unit}  "
                             f"max {st['max']:g}{unit}")
        res = spread["resolution"]
        if res["most_common"]:
            common = ", ".join(f"{r} ({n})" for r, n in res["most_common"])
            lines.append(f"resolution {common}; width {res['width']['min']:g}-{res['width']['max']:g}, "
                         f"height {res['height']['min']:g}-{res['height']['max']:g}")
        if len(self.sources) > 1 or any(s.get("sampling", "all") != "all" for s in self.sources):
            lines.append("sources:")
            for src in self.sources:
                lines.append(f"  {src['name']:16s} {src['format']:8s} {src['sampled']:7d} records "
                             f"({src['sampling']} of {src['records']})  {src['unreadable']} with unreadable media  "
                             f"{src['annotations']}")
        for video, reason in sorted(self.bad_videos.items()):
            lines.append(f"  {video}: {reason}")
        return "\n".join(lines)

    def report(self) -> dict[str, Any]:
        """The summary as JSON (``--report``); ``bad`` is the skipped.json-format list of bad records."""
        kinds = self.kinds()
        return {"records": self.records, "media": {"total": self.videos, **{k: kinds[k] for k in KINDS}},
                "readable": self.videos - len(self.bad_videos), "unreadable": len(self.bad_videos),
                "unreadable_by_reason": dict(self.reasons().most_common()), **self.spread(),
                "sources": self.sources, "bad_media": dict(sorted(self.bad_videos.items())),
                "bad": [vars(s) for s in self.skipped], "seconds": round(self.seconds, 2), "workers": self.workers}


def _kind(path: str) -> str:
    p = Path(path)
    return "frames" if p.is_dir() else "gif" if p.suffix.lower() == ".gif" else "video"


def probe(task: tuple[str, str, int | None, float | None, float | None, float]) -> dict[str, Any]:
    """Open and decode one medium as training would: ``(path, "video" | "image", size, timeout_s, fps,
    frame_folder_fps)`` → ``{path, kind, ok, reason, frames, fps, duration, width, height}`` (native size).
    Runs in a worker process; never raises for a bad file."""
    path, media, size, timeout_s, fps, folder_fps = task
    kind = "image" if media == "image" else _kind(path)
    out: dict[str, Any] = {"path": path, "kind": kind, "ok": False, "reason": None}
    try:
        if media == "image":
            frame = read_image(path, size)
            shape = frame.shape
            out.update(frames=1)
        else:
            with open_video(path, size=size, timeout_s=timeout_s, fps=fps, frame_folder_fps=folder_fps) as video:
                n = video.num_frames
                frames = video.get_frames(sorted({0, n // 2, n - 1}))
                shape = frames.shape[1:]
                out.update(frames=n, fps=round(float(video.fps), 4), duration=round(float(video.duration), 4))
        wh = (int(shape[1]), int(shape[0])) if size is None else native_size(path)
        if wh is not None:
            out.update(width=wh[0], height=wh[1])
        out["ok"] = True
    except VideoReadError as exc:
        out["reason"] = exc.reason
    except Exception as exc:  # noqa: BLE001 - a checker reports a file it cannot read, whatever the decoder raised
        out["reason"] = f"unexpected error: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return out


def check_video(path: str | Path, size: int | None = None,
                timeout_s: float | None = DataConfig.read_timeout_s) -> str | None:
    """None when the video (file, frame folder or GIF) opens and its first, middle and last frames decode; else
    the reason."""
    return probe((str(path), "video", size, timeout_s, None, DataConfig.frame_folder_fps))["reason"]


def _media_of(rec: Record) -> list[tuple[str, str, float | None]]:
    if rec.images is not None:
        return [(str(p), "image", None) for p in rec.images]
    return [(str(rec.video), "video", rec.fps)]


def _run(tasks: list[tuple[Any, ...]], workers: int, progress: bool | None) -> list[dict[str, Any]]:
    from tqdm import tqdm

    # progress None: a bar when stderr is a terminal (tqdm's choice); True / False: always / never
    bar = tqdm(total=len(tasks), desc="lrc data check", unit="media", file=sys.stderr,
               disable=None if progress is None else not progress, dynamic_ncols=True)
    found: list[dict[str, Any]] = []
    try:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                found.append(probe(task))
                bar.update()
        else:
            _run_pool(tasks, workers, found, bar)
    finally:
        bar.close()
    return found


def _run_pool(tasks: list[tuple[Any, ...]], workers: int, found: list[dict[str, Any]], bar: Any,
              work: Any = None) -> None:
    """``probe`` over ``tasks`` in worker processes. A decoder that crashes its process (a segfault on a corrupt
    file) breaks the pool: the tasks left are then probed one process each, so the culprit is reported as
    such and the rest are still checked. Workers that cannot start at all: the rest run in this process."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    work = work or probe  # a picklable top-level function of one task
    # spawn: a worker imports lrc.data.check (no torch), never a copy of this process's state
    context = multiprocessing.get_context("spawn")
    done: set[str] = set()
    broken = False
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
        futures = [pool.submit(work, task) for task in tasks]
        for future in as_completed(futures):
            try:
                info = future.result()
            except BrokenProcessPool:
                broken = True
                continue
            found.append(info)
            done.add(info["path"])
            bar.update()
    left = [task for task in tasks if task[0] not in done]
    if not broken or not left:
        return
    if not done and not _workers_start(context):
        # no worker can start here (no importable __main__ ...): the rest run in this process
        for task in left:
            found.append(work(task))
            bar.update()
        return
    for task in left:
        try:
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                info = pool.submit(work, task).result()
        except BrokenProcessPool:
            info = {"path": task[0], "kind": "image" if task[1] == "image" else _kind(task[0]), "ok": False,
                    "reason": "decoder crashed: the process reading it died"}
        found.append(info)
        bar.update()


def _workers_start(context: Any) -> bool:
    """Whether a worker process can start and answer here. Asked only when a pool broke before any task came
    back: that is a crashing file as often as a platform without workers, and only the latter may fall back to
    probing in this process (a crash there would end the command)."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            return pool.submit(os.getpid).result() > 0
    except (BrokenProcessPool, OSError):
        return False


def check_records(groups: Sequence[tuple[dict[str, Any], list[Record]]], size: int | None = None,
                  timeout_s: float | None = DataConfig.read_timeout_s, workers: int = 1,
                  progress: bool | None = False,
                  frame_folder_fps: float = DataConfig.frame_folder_fps) -> CheckResult:
    """Check the media of records grouped by source (``(source description, records)``): each distinct medium
    once, in ``workers`` processes."""
    result = CheckResult(workers=max(1, workers))
    t0 = time.perf_counter()
    tasks: dict[str, tuple[Any, ...]] = {}
    for _, records in groups:
        result.records += len(records)
        for rec in records:
            for path, media, fps in _media_of(rec):
                tasks.setdefault(path, (path, media, size, timeout_s, fps, frame_folder_fps))
    for info in _run(list(tasks.values()), result.workers, progress):
        result.info[info["path"]] = info
        if not info["ok"]:
            result.bad_videos[info["path"]] = info["reason"]
    for source, records in groups:
        unreadable = 0
        for rec in records:
            bad = [(p, result.bad_videos[p]) for p, _, _ in _media_of(rec) if p in result.bad_videos]
            if bad:
                result.skipped.append(Skipped(rec.id, rec.media_label, bad[0][1]))
                unreadable += 1
        if source:
            result.sources.append({**source, "unreadable": unreadable})
    result.videos = len(tasks)
    result.seconds = time.perf_counter() - t0
    return result


def check_sources(sources: Sequence[Source], seed: int = 0, **kwargs: Any) -> CheckResult:
    """Check a mixture's sources as a run reads them (formats detected, sampled with ``seed``, repeats once)."""
    from dataclasses import asdict

    groups = []
    for source in sources:
        records, counts = load_split([source], seed=seed)
        count = asdict(counts[0])
        unique = list({id(r): r for r in records}.values())
        groups.append((count, unique))
    return check_records(groups, **kwargs)


def check_annotations(files: Sequence[str | Path], size: int | None = None,
                      timeout_s: float | None = DataConfig.read_timeout_s, format: str = "auto",
                      root: str | Path | None = None, **kwargs: Any) -> CheckResult:
    """Check every record's media in ``files`` (any format, detected unless ``format`` names one; relative media
    paths resolve against ``root``, default each file's folder, as in training)."""
    sources = [Source(f"file {i}", Path(f), root=Path(root) if root else None, format=format)
               for i, f in enumerate(files)]
    return check_sources(sources, size=size, timeout_s=timeout_s, **kwargs)
