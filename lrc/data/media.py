"""Media that are not video files, read like videos: folders of frames, GIFs, and images.

    with open_video("clips/walk/", size=224, fps=2.0) as video:     # a folder of JPEG/PNG frames
        frames = video.get_frames([0, 4, 8])                         # uint8 [3, 224, 224, 3], RGB
    images = read_images(["a.jpg", "b.png"], size=224)              # uint8 [2, 224, 224, 3]
    frames, indices, timestamps = read_frames("clip.mp4", [0, 300, 600], size=224, exact=False)

:func:`open_video` picks the reader from the path: a directory is a **frame folder** (its JPEG/PNG files
in natural order — ``frame_2`` before ``frame_10`` — one video frame each, at the record's ``fps`` or
``data.frame_folder_fps``), a ``.gif`` is read with Pillow (its frame delays give the frame rate), and
anything else is a video file for :class:`lrc.data.video.VideoFile` (PyAV; decord if installed and asked for).
Every reader has the same surface: ``num_frames``, ``fps``, ``duration``, ``backend``, ``get_frames(indices)``,
and works as a context manager, so samplers and the dataset do not care which one they got.

:func:`read_frames` is the one-call read (``lrc.data.read_frames``): the frames at given indices, exactly or
approximately (nearby key frames, lrc/data/video.py), with the indices and timestamps of what was read. The
data module does the same on the file it has already opened for the sampler (``read_opened``).

An **image** is a one-frame clip (docs/data.md): :func:`read_images` decodes the images of an image record,
resized like video frames (``size × size``, aspect ratio not kept).

Every failure is a :class:`MediaReadError` — a ``VideoReadError``, so the dataset skips, counts and
reports the sample exactly as for a bad video — with a short ``reason``. Pillow reads local files
without the decoder time limit of video files (``data.read_timeout_s`` applies to video decoders).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lrc.config.schema import DataConfig
from lrc.data.video import Frames, VideoFile, VideoReadError, index_problem, read_opened

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")  # the files of a frame folder
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
GIF_DEFAULT_FPS = 10.0  # a GIF whose frames give no delay (0 ms): browsers show such frames at about 10 fps


@dataclass
class Skipped:
    """A sample that could not be used: its id, its media (a path, or image paths joined by ", ") and why
    (RUN_DIR/skipped.json and ``lrc data check --report`` list these)."""

    id: str
    video: str
    reason: str


class MediaReadError(VideoReadError):
    """An image, frame folder or GIF that cannot be read (a ``VideoReadError``: skipped like a bad video)."""

    def __init__(self, path: str | os.PathLike, reason: str, what: str = "media"):
        self.path = str(path)
        self.reason = reason
        RuntimeError.__init__(self, f"cannot read {what} {self.path}: {reason}. Check the file, replace it, or "
                                    "remove its records from the annotations.")


def _natural_key(name: str) -> list[Any]:
    """``frame_2`` before ``frame_10``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _regular_file(path: Path, what: str) -> None:
    if not path.exists():
        raise MediaReadError(path, "file not found", what)
    if not path.is_file():
        raise MediaReadError(path, "not a regular file", what)
    if path.stat().st_size == 0:
        raise MediaReadError(path, "zero bytes", what)


def _to_rgb_array(image: Any, size: int | None) -> np.ndarray:
    from PIL import Image

    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def read_image(path: str | os.PathLike, size: int | None = None, what: str = "image") -> np.ndarray:
    """One image file as uint8 ``[H, W, 3]`` RGB (``[size, size, 3]`` when ``size`` is given)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    _regular_file(p, what)
    try:
        with Image.open(p) as image:
            image.load()
            return _to_rgb_array(image, size)
    except UnidentifiedImageError:
        raise MediaReadError(p, "not an image Pillow can read", what) from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise MediaReadError(p, f"decode failed: {str(exc).splitlines()[0][:200]}", what) from None


def read_images(paths: Sequence[str | os.PathLike], size: int | None = None) -> np.ndarray:
    """The images of an image record, uint8 ``[N, size, size, 3]``. Without ``size`` the images must share
    one size (the native size of the first)."""
    frames = [read_image(p, size) for p in paths]
    if not frames:
        raise MediaReadError("(no images)", "an image record needs at least one image", "images")
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise MediaReadError(paths[0], f"images of different sizes {sorted(s[:2] for s in shapes)}; give a size "
                                       "to resize them", "images")
    return np.stack(frames)


class FrameFolder:
    """A directory of JPEG/PNG frames read as a video at ``fps`` frames per second."""

    backend = "frames"

    def __init__(self, path: str | os.PathLike, size: int | None = None, fps: float = DataConfig.frame_folder_fps):
        self.path = str(path)
        self.size = size
        p = Path(path)
        if not p.is_dir():
            raise MediaReadError(p, "not a folder", "frame folder")
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise MediaReadError(p, f"invalid frame rate {fps!r}; give the record an fps > 0", "frame folder")
        try:
            names = [e.name for e in os.scandir(p) if e.is_file() and Path(e.name).suffix.lower() in FRAME_EXTENSIONS]
        except OSError as exc:
            raise MediaReadError(p, f"cannot list the folder: {exc.strerror or exc}", "frame folder") from None
        if not names:
            raise MediaReadError(p, f"no frames ({', '.join(FRAME_EXTENSIONS)} files) in the folder", "frame folder")
        self.files = [p / n for n in sorted(names, key=_natural_key)]
        self.num_frames = len(self.files)
        self.fps = float(fps)
        self.duration = self.num_frames / self.fps

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        indices = [int(i) for i in indices]
        problem = index_problem(indices, self.num_frames)
        if problem:
            raise MediaReadError(self.path, problem, "frame folder")
        frames = {i: read_image(self.files[i], self.size, "frame") for i in sorted(set(indices))}
        shapes = {f.shape for f in frames.values()}
        if len(shapes) > 1:
            raise MediaReadError(self.path, f"frames of different sizes {sorted(s[:2] for s in shapes)}",
                                 "frame folder")
        return np.stack([frames[i] for i in indices])

    def close(self) -> None:
        pass

    def __enter__(self) -> "FrameFolder":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class GifFile:
    """An animated (or still) GIF read as a video; its frame delays give ``fps`` (frames / total delay)."""

    backend = "gif"

    def __init__(self, path: str | os.PathLike, size: int | None = None):
        from PIL import Image, UnidentifiedImageError

        self.path = str(path)
        self.size = size
        p = Path(path)
        _regular_file(p, "GIF")
        try:
            self._image = Image.open(p)
            self.num_frames = int(getattr(self._image, "n_frames", 1))
            delays = []
            for i in range(self.num_frames):
                self._image.seek(i)
                delays.append(float(self._image.info.get("duration") or 0.0))
        except UnidentifiedImageError:
            raise MediaReadError(p, "not an image Pillow can read", "GIF") from None
        except (OSError, EOFError, SyntaxError, ValueError) as exc:
            raise MediaReadError(p, f"decode failed: {str(exc).splitlines()[0][:200] or type(exc).__name__}",
                                 "GIF") from None
        total = sum(delays) / 1000.0
        self.fps = self.num_frames / total if total > 0 else GIF_DEFAULT_FPS
        self.duration = self.num_frames / self.fps

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        indices = [int(i) for i in indices]
        problem = index_problem(indices, self.num_frames)
        if problem:
            raise MediaReadError(self.path, problem, "GIF")
        if self._image is None:
            raise MediaReadError(self.path, "the GIF is closed; read frames inside the `with` block", "GIF")
        frames = {}
        try:
            for i in sorted(set(indices)):  # forward seeks: Pillow composes each frame from the previous ones
                self._image.seek(i)
                frames[i] = _to_rgb_array(self._image, self.size)
        except (OSError, EOFError, ValueError) as exc:
            raise MediaReadError(self.path, f"decode failed: {str(exc).splitlines()[0][:200] or type(exc).__name__}",
                                 "GIF") from None
        return np.stack([frames[i] for i in indices])

    def close(self) -> None:
        if self._image is not None:
            self._image.close()
            self._image = None

    def __enter__(self) -> "GifFile":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def open_video(path: str | os.PathLike, size: int | None = None,
               timeout_s: float | None = DataConfig.read_timeout_s, fps: float | None = None,
               frame_folder_fps: float = DataConfig.frame_folder_fps, threads: int = 1) -> Any:
    """The reader for a record's video: a frame folder (at ``fps``, else ``frame_folder_fps``), a GIF, or a video
    file (:class:`lrc.data.video.VideoFile`, with ``timeout_s`` and ``threads`` decoder threads). Use it as a
    context manager."""
    p = Path(path)
    if p.is_dir():
        return FrameFolder(p, size=size, fps=fps if fps is not None else frame_folder_fps)
    if p.suffix.lower() == ".gif":
        return GifFile(p, size=size)
    return VideoFile(path, size=size, timeout_s=timeout_s, threads=threads)


def read_frames(path: str | os.PathLike, indices: Sequence[int], size: int | None = None, exact: bool = True, *,
                timeout_s: float | None = DataConfig.read_timeout_s, threads: int = 1,
                fps: float | None = None) -> Frames:
    """The frames at ``indices`` of a video file (or frame folder, GIF) as :class:`lrc.data.video.Frames`:
    ``frames`` uint8 ``[T, H, W, 3]`` RGB (``size x size`` when given), ``indices`` of the frames returned and
    their ``timestamps`` in seconds (``index / fps``); it unpacks as ``frames, indices, timestamps``.

    ``exact=True``: exactly the frames asked for (decoded from the key frame before each, as little as
    exactness allows). ``exact=False``: where a key frame lies closer to a requested frame than to any other
    requested one, that key frame instead (far cheaper to decode; within one key-frame interval; distinct and in
    order); ``indices`` and ``timestamps`` say which frames came back, so text and targets built from them stay
    true. docs/data.md, "Reading frames". ``fps``: a frame folder's rate. A file that cannot be read raises
    :class:`lrc.data.video.VideoReadError` (its ``reason`` says why); a read is bounded by ``timeout_s``."""
    with open_video(path, size=size, timeout_s=timeout_s, fps=fps, threads=threads) as video:
        return read_opened(video, indices, exact)


def segment_frames(num_frames: int, fps: float, start: float | None, end: float | None,
                   path: str | os.PathLike = "") -> tuple[int, int]:
    """The video frames ``[lo, hi)`` of the segment ``[start, end)`` seconds (a frame ``k`` is on screen during
    ``[k/fps, (k+1)/fps)``): ``lo = floor(start·fps)``, ``hi = ceil(end·fps)`` clamped to the video. A segment
    that starts at or after the end of the video is a ``MediaReadError`` (the sample is skipped)."""
    lo = int(math.floor(start * fps + 1e-9)) if start else 0
    hi = num_frames if end is None else min(num_frames, int(math.ceil(end * fps - 1e-9)))
    if lo >= num_frames:
        raise MediaReadError(path, f"the segment starts at {start:g} s but the video lasts {num_frames / fps:.3f} s",
                             "video")
    return lo, max(hi, lo + 1)


def native_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(width, height)`` of a video's (or frame folder's, GIF's, image's) frames from its header, without
    decoding; None when it cannot be told."""
    from PIL import Image

    p = Path(path)
    try:
        if p.is_dir():
            first = FrameFolder(p).files[0]
            with Image.open(first) as image:
                return image.size
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            with Image.open(p) as image:
                return image.size
        import av

        with av.open(str(p)) as container:
            stream = container.streams.video[0]
            return int(stream.codec_context.width), int(stream.codec_context.height)
    except Exception:  # noqa: BLE001 - a probe for a summary; the reader itself reports what is wrong
        return None
