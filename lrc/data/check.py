"""``lrc data check``: find every unreadable video of a corpus before training on it.

    lrc data check data/synth/train.jsonl data/synth/val.jsonl --report bad.json --size 224

Each distinct video is opened the way training opens it (the same readers, frame size and time
limit) and three frames spread over the file are decoded: the first, the middle and the last. The
last one matters: a truncated file usually still opens, with the frame count of its header, and only
fails (or, with some decord versions, hangs) when the decoder reaches the missing end. A full decode
would catch a corrupt packet in between as well, but costs as much as an epoch; three frames keep
the check at about the cost of opening the files.

The report has the format of a run's ``skipped.json``: one ``{id, video, reason}`` per record whose
video is bad, so a list of bad records from either source can be handled the same way.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from lrc.config.schema import DataConfig
from lrc.data.annotations import load_annotations
from lrc.data.dataset import Skipped
from lrc.data.video import VideoFile, VideoReadError


@dataclass
class CheckResult:
    records: int = 0
    videos: int = 0
    bad_videos: dict[str, str] = field(default_factory=dict)  # video path -> reason
    skipped: list[Skipped] = field(default_factory=list)  # one per record whose video is bad
    seconds: float = 0.0

    def reasons(self) -> Counter:
        """Bad videos per kind of reason: the reason up to its first colon ("decode failed",
        "timed out after 30s", "zero bytes"), since the rest names the decoder's own words."""
        return Counter(reason.split(":")[0] for reason in self.bad_videos.values())

    def summary(self) -> str:
        lines = [f"{self.records} records, {self.videos} videos checked in {self.seconds:.1f}s: "
                 f"{len(self.bad_videos)} unreadable video(s), used by {len(self.skipped)} record(s)"]
        for kind, n in self.reasons().most_common():
            lines.append(f"  {n:5d}  {kind}")
        for video, reason in sorted(self.bad_videos.items()):
            lines.append(f"  {video}: {reason}")
        return "\n".join(lines)


def check_video(path: str | Path, size: int | None = None,
                timeout_s: float | None = DataConfig.read_timeout_s) -> str | None:
    """None when the video opens and its first, middle and last frames decode; else the reason."""
    try:
        with VideoFile(path, size=size, timeout_s=timeout_s) as video:
            n = video.num_frames
            video.get_frames(sorted({0, n // 2, n - 1}))
    except VideoReadError as exc:
        return exc.reason
    return None


def check_annotations(files: Sequence[str | Path], size: int | None = None,
                      timeout_s: float | None = DataConfig.read_timeout_s) -> CheckResult:
    """Check every record's video in ``files`` (JSONL annotations; relative video paths resolve against
    each file's folder, as in training). Each video is decoded once however many records use it."""
    result = CheckResult()
    checked: set[str] = set()
    t0 = time.perf_counter()
    for file in files:
        records = load_annotations(file)
        result.records += len(records)
        for rec in records:
            video = str(rec.video)
            if video not in checked:
                checked.add(video)
                reason = check_video(video, size=size, timeout_s=timeout_s)
                if reason is not None:
                    result.bad_videos[video] = reason
            if video in result.bad_videos:
                result.skipped.append(Skipped(rec.id, video, result.bad_videos[video]))
    result.videos = len(checked)
    result.seconds = time.perf_counter() - t0
    return result
