"""Reading frames out of a video file: decord first, PyAV when decord cannot.

    with VideoFile("clip.mp4", size=224) as video:
        frames = video.get_frames([0, 10, 20])   # uint8 [3, 224, 224, 3], RGB

decord is fast at random access (it seeks to the nearest key frame) and resizes while decoding, so
it is the default. Some files it cannot open or decode (odd containers, broken indexes); PyAV (the
FFmpeg bindings) reads nearly everything by decoding the stream from the start, which is slow for
long videos but fine as a fallback. Every failure becomes a ``VideoReadError`` with a short
``reason``, so the dataset can skip the sample, count it and report it (docs/data.md). A
decoder that hangs on a broken file is not waited for longer than ``timeout_s`` (see ``_bounded``).
"""

from __future__ import annotations

import math
import os
import re
import threading
from typing import Any, Callable, Sequence

import numpy as np

from lrc.config.schema import DataConfig  # data.read_timeout_s: the reader's default time limit
from lrc.data.paths import stat_problem

BACKENDS = ("decord", "pyav")


class VideoReadError(RuntimeError):
    """A video that cannot be read; ``reason`` is short and human ("zero bytes", "no video stream")."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"cannot read video {self.path}: {reason}. Check the file (e.g. `ffprobe {self.path}`), "
            "re-encode it, or remove its records from the annotations."
        )


class _DecordReader:
    """decord.VideoReader with the frame size fixed at open time."""

    name = "decord"

    def __init__(self, path: str, size: int | None):
        import decord

        # decord reports FFmpeg's complaints about broken files on stderr; the caller gets our
        # VideoReadError instead, so keep the log quiet.
        decord.logging.set_level(decord.logging.QUIET)
        side = size if size is not None else -1  # -1: decord keeps the native size
        self.reader = decord.VideoReader(path, ctx=decord.cpu(0), width=side, height=side, num_threads=1)
        self.num_frames = len(self.reader)
        self.fps = float(self.reader.get_avg_fps())
        self.span: float | None = None  # seconds from the first frame's start to the last frame's end
        if self.num_frames > 0:
            try:  # decord indexed every packet at open: the frames' own timestamps cost nothing
                first, last = self.reader.get_frame_timestamp([0, self.num_frames - 1])
                self.span = float(last[1] - first[0])
            except Exception:  # noqa: BLE001 - an index without timestamps: the average rate stands
                self.span = None

    def get_frames(self, indices: list[int]) -> np.ndarray:
        return self.reader.get_batch(indices).asnumpy()

    def close(self) -> None:
        # decord frees its demuxer and decoder when the reader is garbage-collected
        self.reader = None


class _PyAVReader:
    """PyAV, decoding sequentially from the first frame and keeping the requested ones.

    The container is opened per call and closed straight after, so nothing is held between calls.
    """

    name = "pyav"

    def __init__(self, path: str, size: int | None):
        import av

        self.path = path
        self.size = size
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoReadError(path, "no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.fps = float(rate) if rate else 0.0
            # The packets' timestamps give the true duration of a variable-frame-rate stream, and a frame
            # count where the container stores none (raw streams, some MKV/WebM); demuxing decodes nothing.
            count, lo, hi = 0, None, None
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                count += 1
                if packet.pts is not None:
                    end = packet.pts + (packet.duration or 0)
                    lo = packet.pts if lo is None else min(lo, packet.pts)
                    hi = end if hi is None else max(hi, end)
            self.num_frames = int(stream.frames or 0) or count
            self.span = float((hi - lo) * stream.time_base) if lo is not None and hi is not None and stream.time_base \
                else None

    def get_frames(self, indices: list[int]) -> np.ndarray:
        import av

        wanted: dict[int, list[int]] = {}  # frame index -> positions in the output
        for pos, index in enumerate(indices):
            wanted.setdefault(index, []).append(pos)
        last = max(wanted)
        out: list[np.ndarray | None] = [None] * len(indices)
        decoded = 0
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            for i, frame in enumerate(container.decode(stream)):
                decoded = i + 1
                if i in wanted:
                    if self.size is not None:
                        # same size as decord's decode-time resize: a square of size x size
                        frame = frame.reformat(width=self.size, height=self.size)
                    rgb = frame.to_ndarray(format="rgb24")
                    for pos in wanted[i]:
                        out[pos] = rgb
                if i >= last:
                    break
        missing = [index for index, pos in wanted.items() if out[pos[0]] is None]
        if missing:
            raise VideoReadError(
                self.path, f"decode failed: frame {min(missing)} requested but only {decoded} "
                f"frames could be decoded (the file is probably truncated)")
        return np.stack(out)  # type: ignore[arg-type]

    def close(self) -> None:
        pass


def _open(backend: str, path: str, size: int | None) -> Any:
    return _DecordReader(path, size) if backend == "decord" else _PyAVReader(path, size)


# decord's messages start with its log prefix: a wall-clock time and a source location
# ("[22:24:38] /github/workspace/src/video/ffmpeg/threaded_decoder.cc:292: "), different on every run
_DECODER_LOG_PREFIX = re.compile(r"\[\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\]\s*|\S+\.(?:cc|cpp|c|h):\d+:\s*")


def _short(exc: BaseException) -> str:
    """One stable line of an exception message: decord's can span a C++ backtrace, and its log prefix (a
    time of day, a source file) would make the same bad file's reason differ from run to run."""
    # FFmpeg errors from PyAV carry a clean message in strerror ("Invalid data found when ...")
    if getattr(exc, "strerror", None):
        return str(exc.strerror)
    text = str(exc).strip().splitlines()
    first = _DECODER_LOG_PREFIX.sub("", text[0]).strip() if text else ""
    return (first or type(exc).__name__)[:200]



class VideoReadTimeout(VideoReadError):
    """An open or read that did not finish within the time limit (``VideoFile(timeout_s=...)``)."""


def _bounded(path: str, timeout_s: float | None, work: Callable[[], Any], cleanup: Callable[[], None]) -> Any:
    """``work()``, but give up after ``timeout_s`` seconds with ``VideoReadTimeout``.

    Why a thread, and what a timeout leaves behind: decord can hang inside one C++ call on a broken
    file (its issue tracker has get_batch spinning at the end of a truncated stream, and seeks
    that never return). Python cannot stop a thread, and a thread stuck in C++ never returns to the
    interpreter to see a flag, so a stuck read cannot be cancelled: we stop *waiting* for it. The
    worker thread is a daemon (it does not keep the process alive at exit) and, should it ever
    finish, runs ``cleanup`` itself to close the reader it was using, since the caller has let go of
    it. The price of a hang is one parked thread and one decoder's memory until the process ends;
    a run with many such files stops earlier on ``data.max_bad_fraction``. Waiting is possible at
    all because both decoders release the GIL while in FFmpeg (decord is called through ctypes,
    PyAV decodes in ``nogil`` sections).

    A subprocess could be killed, but per read it costs a Python start plus a decord import (tenths
    of a second) and a copy of every frame, and a pool of reader processes needs restart logic
    when one hangs. A thread costs about 0.1 ms, so every open and read gets one.
    """
    if timeout_s is None:
        return work()
    lock = threading.Lock()
    done = threading.Event()
    state: dict[str, Any] = {"gave_up": False}

    def run() -> None:
        try:
            state["value"] = work()
        except BaseException as exc:  # handed to the waiting thread, which re-raises it
            state["error"] = exc
        with lock:
            done.set()
            late = state["gave_up"]
        if late:
            try:
                cleanup()
            except Exception:
                pass

    threading.Thread(target=run, name=f"lrc-video-read {os.path.basename(path)}", daemon=True).start()
    if not done.wait(timeout_s):
        with lock:
            if not done.is_set():  # it may have finished between the wait and the lock
                state["gave_up"] = True
                raise VideoReadTimeout(path, f"timed out after {timeout_s:g}s")
    if "error" in state:
        raise state["error"]
    return state["value"]


class VideoFile:
    """One opened video: ``num_frames``, ``fps``, ``duration`` (seconds), ``backend`` and ``get_frames``.

    ``size``: when given, frames come out resized to ``size x size`` (aspect ratio is not kept, as
    the InternVL-style vision encoders take square inputs). ``backend``: force "decord" or "pyav";
    by default decord is tried first and PyAV is the fallback. ``timeout_s``: the open and each
    ``get_frames`` call give up after this many seconds with ``VideoReadTimeout`` (a
    ``VideoReadError`` whose reason is "timed out after Ns"); None waits for ever. Use it as a context
    manager: the reader is closed on exit, also after an error or a timeout.
    """

    def __init__(self, path: str | os.PathLike, size: int | None = None, backend: str | None = None,
                 timeout_s: float | None = DataConfig.read_timeout_s):
        self._reader: Any = None
        self._broken: str | None = None  # set when a failure left no usable reader
        self.path = str(path)
        self.size = size
        self.timeout_s = timeout_s
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"VideoFile backend must be one of {BACKENDS} or None, got {backend!r}")
        if size is not None and (not isinstance(size, int) or size <= 0):
            raise ValueError(f"VideoFile size must be a positive int or None, got {size!r}")
        if timeout_s is not None and not (isinstance(timeout_s, (int, float)) and 0 < timeout_s < math.inf):
            raise ValueError(f"VideoFile timeout_s must be a positive number of seconds or None, got {timeout_s!r}")
        self._order = [backend] if backend else list(BACKENDS)

        # The open, path checks included (a stat on a hung network mount blocks too), is bounded by
        # timeout_s; a reader that a timed-out open produces later is closed by its own thread.
        opened: dict[str, Any] = {}

        def close_late() -> None:
            if opened.get("reader") is not None:
                opened["reader"].close()

        self._reader = _bounded(self.path, timeout_s, lambda: self._open_first_readable(opened), close_late)
        self.backend: str = self._reader.name
        self.num_frames: int = int(self._reader.num_frames)
        self.fps: float = float(self._reader.fps)
        self.duration: float = self.num_frames / self.fps
        span = getattr(self._reader, "span", None)
        if span is not None and math.isfinite(span) and span > 0 and abs(span - self.duration) > 0.01 * span:
            # a variable frame rate (or a container's wrong average rate): the frames' own timestamps say how
            # long the video is, and the rate that spreads its frames over that time is the one samplers get
            self.duration = span
            self.fps = self.num_frames / span

    def _open_first_readable(self, opened: dict[str, Any]) -> Any:
        """The first backend in order that opens the file with sane metadata (runs in a worker thread)."""
        # Cheap checks first: decoders give confusing messages (or worse) on these. A directory, a FIFO or a
        # device (which could block a decoder forever) is not opened; a symlink loop is named as one.
        problem = stat_problem(self.path)
        if problem is not None:
            raise VideoReadError(self.path, problem)

        errors: list[str] = []
        for name in self._order:
            try:
                reader = _open(name, self.path, self.size)
            except VideoReadError as exc:
                errors.append(exc.reason)
                continue
            except Exception as exc:  # decoders raise many types (DECORDError, av.FFmpegError, ...)
                errors.append(f"{name}: {_short(exc)}")
                continue
            problem = self._check_metadata(reader)
            if problem is None:
                opened["reader"] = reader
                return reader
            reader.close()
            errors.append(problem)
        raise VideoReadError(self.path, self._summarise(errors))

    @staticmethod
    def _check_metadata(reader: Any) -> str | None:
        if reader.num_frames <= 0:
            return "zero frames"
        if not math.isfinite(reader.fps) or reader.fps <= 0:
            return f"invalid frame rate {reader.fps!r}"
        return None

    @staticmethod
    def _summarise(errors: list[str]) -> str:
        # Prefer a plain-language reason both decoders agree on ("zero frames", "no video stream").
        plain = [e for e in errors if not e.startswith(BACKENDS)]
        if plain:
            return plain[-1]
        return "cannot open as video: " + "; ".join(errors)

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 ``[T, H, W, 3]`` RGB."""
        if self._reader is None:
            closed = "video is closed; read frames inside the `with VideoFile(...)` block"
            raise VideoReadError(self.path, self._broken or closed)
        indices = [int(i) for i in indices]
        if not indices:
            raise VideoReadError(self.path, "no frame indices requested")
        bad = [i for i in indices if not 0 <= i < self.num_frames]
        if bad:
            raise VideoReadError(self.path, f"frame index {bad[0]} out of range [0, {self.num_frames})")
        # The worker thread owns the reader until it returns; after a timeout it keeps it and closes
        # it when (if) the stuck call comes back, and this file stays broken.
        held = {"reader": self._reader}
        self._reader = None

        def close_late() -> None:
            if held["reader"] is not None:
                held["reader"].close()

        try:
            frames = _bounded(self.path, self.timeout_s, lambda: self._read(held, indices), close_late)
        except VideoReadTimeout as exc:
            self._broken = exc.reason
            raise
        except BaseException as exc:
            self._reader = held["reader"]
            if self._reader is None:
                self._broken = exc.reason if isinstance(exc, VideoReadError) else _short(exc)
            raise
        self._reader = held["reader"]
        self.backend = self._reader.name
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) != len(indices):
            raise VideoReadError(self.path, f"decode failed: {self.backend} returned frames of shape "
                                 f"{tuple(frames.shape)} and dtype {frames.dtype}, "
                                 f"expected [{len(indices)}, H, W, 3] uint8")
        return frames

    def _read(self, held: dict[str, Any], indices: list[int]) -> np.ndarray:
        """Decode with the held reader; on a decord failure switch ``held`` to PyAV (worker thread)."""
        reader = held["reader"]
        try:
            return reader.get_frames(indices)
        except VideoReadError:
            raise
        except Exception as exc:
            if reader.name != "decord" or "pyav" not in self._order:
                raise VideoReadError(self.path, f"decode failed: {_short(exc)}") from exc
            # decord opened the file but cannot decode these frames; PyAV decodes from the start
            # and often gets through. Stay on PyAV for later calls on this file.
            first_error = _short(exc)
            reader.close()
            held["reader"] = None
            try:
                held["reader"] = _PyAVReader(self.path, self.size)
                return held["reader"].get_frames(indices)
            except VideoReadError as exc2:
                raise VideoReadError(self.path, f"{exc2.reason} (decord: {first_error})") from exc
            except Exception as exc2:
                raise VideoReadError(self.path, f"decode failed: decord: {first_error}; pyav: {_short(exc2)}") from exc2

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> "VideoFile":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        # a VideoFile used without `with` still releases its decoder
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._reader is None else self.backend
        return f"VideoFile({self.path!r}, size={self.size}, {state})"
