"""Reading frames out of a video file: PyAV by default, decord when it is installed and asked for.

    with VideoFile("clip.mp4", size=224) as video:
        frames = video.get_frames([0, 10, 20])           # uint8 [3, 224, 224, 3], RGB, exactly those frames
        got = video.read([0, 10, 20], exact=False)       # Frames(frames, indices, timestamps): maybe key frames
    got = lrc.data.read_frames("clip.mp4", [0, 10, 20])  # the same in one call (lrc/data/media.py)

**How a read decodes.** A frame of a compressed video can only be decoded from the key frame before it,
through every frame between that the codec needs. When the file is opened, one pass over its packets (no
decoding; tens of milliseconds for ten minutes of video) records every frame's timestamp and which frames
are key frames. A read then groups the wanted frames into *runs* (:func:`decode_runs`): it seeks to the key
frame before the first frame of a run and decodes forward, and a later frame whose key frame the run has
already passed joins the run instead of seeking back. Inside a run, frames that no other frame refers to
(H.264/HEVC non-reference B-frames and the like) are skipped unless they are wanted (FFmpeg's
``skip_frame = NONREF``), and the decoder is drained as soon as the run's last wanted frame has been fed.
That is exact: the frames are bit for bit the ones a decode of the whole file gives (tests/data/test_read_frames.py),
and it decodes only what exactness needs (benchmarks/decoding.py; docs/benchmarks.md has the figures).

**Approximate reads** (``exact=False``, :func:`approximate_indices`) take, for each wanted frame, the
nearest key frame instead, when it lies less than half-way to the nearest other wanted frame; otherwise that
frame is read exactly. A key frame costs one frame's decoding, so sparse sampling of a long video decodes a
few dozen frames instead of a large part of the file. The frames stay distinct and in order, each is within
one key-frame interval of the one asked for and less than half the sampling step away, and the result says
which frames were read and when they are (:class:`Frames`), so timestamps shown to the model and task
targets describe the frames it sees.

**Files the index cannot serve.** When packets lack timestamps, share them, disagree with the header's frame
count, or the first frame is not a key frame (broken or odd files), or when a seek lands anywhere but on the
expected key frame, the reader decodes from the start of the stream and keeps the wanted frames, as it
always did; such a file is read exactly in both modes.

**Backends.** PyAV (FFmpeg's bindings) is the default and the only required one. decord is optional
(``pip install "lrc-video[decord]"``); it is imported only when used, is the second choice when PyAV cannot
open or decode a file, and ``backend="decord"`` without it installed is a :class:`lrc.errors.MissingDependencyError`
that says how to install it. Every failure becomes a ``VideoReadError`` with a short ``reason``, so the
dataset can skip the sample, count it and report it (docs/data.md). A decoder that hangs on a broken file
is not waited for longer than ``timeout_s`` (see ``_bounded``). ``threads`` is how many threads decode: with
PyAV, several runs are decoded at once, each thread with its own decoder (a single run uses FFmpeg's frame
threads instead); the data module gives 1 per worker process, or ``run.threads`` when it decodes in the
training process (lrc/cpus.py).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import threading
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from lrc.config.schema import DataConfig  # data.read_timeout_s: the reader's default time limit
from lrc.data.paths import stat_problem
from lrc.errors import missing_dependency

BACKENDS = ("pyav", "decord")  # in the order a file is tried when no backend is named


class VideoReadError(RuntimeError):
    """A video that cannot be read; ``reason`` is short and human ("zero bytes", "no video stream")."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"cannot read video {self.path}: {reason}. Check the file (e.g. `ffprobe {self.path}`), "
            "re-encode it, or remove its records from the annotations."
        )


def index_problem(indices: Sequence[int], num_frames: int) -> str | None:
    """Why frames ``indices`` cannot be read from a medium of ``num_frames`` frames, or None (every reader's check)."""
    if not indices:
        return "no frame indices requested"
    bad = [i for i in indices if not 0 <= i < num_frames]
    return f"frame index {bad[0]} out of range [0, {num_frames})" if bad else None


class Frames(NamedTuple):
    """What a read returns (``read_frames``, ``VideoFile.read``); unpacks as ``frames, indices, timestamps``.

    ``frames``: uint8 ``[T, H, W, 3]`` RGB. ``indices``: int64 ``[T]``, the video frames returned, position by
    position: the requested ones in an exact read, the frames actually read in an approximate one.
    ``timestamps``: float64 ``[T]`` seconds, ``indices / fps``, the start time of each returned frame on the
    clock the samplers use (frame k is on screen during ``[k/fps, (k+1)/fps)``; for a variable-frame-rate
    file, fps is the rate that spreads its frames over their true duration)."""

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray


def decord_available() -> bool:
    """Whether the optional decord package is installed (found without importing it)."""
    try:
        return importlib.util.find_spec("decord") is not None
    except (ImportError, ValueError):  # a broken install, or a module entry set to None (tests simulate absence)
        return False


# ---------------------------------------------------------------------------------------------
# What to decode: runs for exact reads, key frames for approximate ones
# ---------------------------------------------------------------------------------------------
def key_before(keyframes: np.ndarray, index: int) -> int:
    """The last key frame at or before frame ``index`` (``keyframes`` sorted, starting at frame 0)."""
    return int(keyframes[np.searchsorted(keyframes, index, side="right") - 1])


def decode_runs(wanted: Sequence[int], keyframes: np.ndarray) -> list[tuple[int, list[int]]]:
    """Sorted distinct frame indices grouped into decoding runs, ``[(key frame to seek to, [frames]), ...]``.

    A frame joins the current run when its own key frame is at or before the run's previous wanted frame:
    decoding on from there costs fewer frames than seeking back to its key frame would. Otherwise it starts
    a run at its key frame."""
    runs: list[tuple[int, list[int]]] = []
    for index in wanted:
        key = key_before(keyframes, index)
        if runs and key <= runs[-1][1][-1]:
            runs[-1][1].append(int(index))
        else:
            runs.append((key, [int(index)]))
    return runs


def approximate_indices(indices: Sequence[int], keyframes: np.ndarray) -> np.ndarray:
    """The frames an approximate read returns for ``indices`` (any order, repeats allowed; all in range).

    Each distinct wanted frame ``t`` takes the nearer of the two key frames around it (the one at or before it,
    the one after it; the earlier on a tie) if it lies less than half-way from ``t`` to the nearest other
    wanted frame, else ``t`` itself (read exactly). So the frames returned are distinct where the wanted ones
    are, in the same order, each within one key-frame interval of its request and less than half the
    sampling step away from it."""
    requested = np.asarray(indices, dtype=np.int64).reshape(-1)
    wanted = np.unique(requested)
    chosen = wanted.copy()
    gaps = np.diff(wanted)
    for i, t in enumerate(wanted.tolist()):
        near = [int(g) for g in gaps[max(i - 1, 0):i + 1]]  # the distances to the wanted frames around t
        j = int(np.searchsorted(keyframes, t, side="right"))
        around = [int(keyframes[j - 1])] + ([int(keyframes[j])] if j < len(keyframes) else [])
        k = min(around, key=lambda k: abs(k - t))
        if not near or 2 * abs(k - t) < min(near):
            chosen[i] = k
    return chosen[np.searchsorted(wanted, requested)]


# ---------------------------------------------------------------------------------------------
# The backends
# ---------------------------------------------------------------------------------------------
class _SeekFailed(Exception):
    """The timestamp index could not serve a read (a seek landed elsewhere, a frame did not come out)."""


def _frame_index(pts: list[int], key_pts: list[int], packets: int, num_frames: int) -> tuple[Any, Any]:
    """(every frame's pts in presentation order, the key frames' indices) from the open-time packet pass, or
    (None, None) when they cannot be trusted to name frames: a packet without a timestamp, two frames with one
    timestamp, a count that differs from the header's, or a first frame that is not a key frame."""
    if not pts or len(pts) != packets or packets != num_frames:
        return None, None
    order = np.sort(np.asarray(pts, dtype=np.int64))
    if np.any(np.diff(order) <= 0):
        return None, None
    keys = np.searchsorted(order, np.asarray(sorted(set(key_pts)), dtype=np.int64))
    if not len(keys) or keys[0] != 0:
        return None, None
    return order, keys.astype(np.int64)


def _set_threads(stream: Any, threads: int) -> None:
    """FFmpeg's decoding threads for ``stream``: frame threads (and slice threads where the codec has them)."""
    stream.thread_count = max(1, int(threads))
    stream.thread_type = "AUTO" if threads > 1 else "SLICE"


class _PyAVReader:
    """PyAV. The open-time pass over the packets (no decoding) counts the frames, measures their span and
    indexes their timestamps and key frames; reads seek with that index (module docstring).

    The container is opened per read and closed straight after, so nothing is held between calls."""

    name = "pyav"

    def __init__(self, path: str, size: int | None, threads: int = 1):
        import av

        self.path, self.size, self.threads = path, size, threads
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoReadError(path, "no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.fps = float(rate) if rate else 0.0
            # The packets' timestamps give the true duration of a variable-frame-rate stream, and a frame
            # count where the container stores none (raw streams, some MKV/WebM); demuxing decodes nothing.
            count, lo, hi = 0, None, None
            pts: list[int] = []
            key_pts: list[int] = []
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                count += 1
                if packet.pts is not None:
                    pts.append(packet.pts)
                    if packet.is_keyframe:
                        key_pts.append(packet.pts)
                    end = packet.pts + (packet.duration or 0)
                    lo = packet.pts if lo is None else min(lo, packet.pts)
                    hi = end if hi is None else max(hi, end)
            self.num_frames = int(stream.frames or 0) or count
            self.span = float((hi - lo) * stream.time_base) if lo is not None and hi is not None and stream.time_base \
                else None
        self._pts, self.keyframes = _frame_index(pts, key_pts, count, self.num_frames)

    def get_frames(self, indices: list[int]) -> np.ndarray:
        if self._pts is not None:
            try:
                return self._read_seeking(indices)
            except _SeekFailed:  # this file's index cannot be trusted: read it from the start from now on
                self._pts = self.keyframes = None
        return self._read_from_start(indices)

    def _rgb(self, frame: Any) -> np.ndarray:
        if self.size is None:
            return frame.to_ndarray(format="rgb24")
        # a square of size x size, scaled and converted in one pass (decord resizes while decoding likewise)
        return frame.to_ndarray(format="rgb24", width=self.size, height=self.size)

    def _read_seeking(self, indices: list[int]) -> np.ndarray:
        runs = decode_runs(sorted(set(indices)), self.keyframes)
        out: dict[int, np.ndarray] = {}
        lock = threading.Lock()
        pending = iter(runs)

        def take() -> tuple[int, list[int]] | None:
            with lock:
                return next(pending, None)

        helpers = min(self.threads, len(runs))
        if helpers <= 1:  # one container; FFmpeg's frame threads, if any, inside the decoder
            self._decode_runs(take, out, self.threads)
            return np.stack([out[i] for i in indices])
        # Runs start at key frames, so they are independent: several threads, each with its own container and a
        # one-thread decoder, take the next run in turn. Frame threads would gain little here: skipping the
        # non-reference frames leaves a chain of frames that each need the one before.
        errors: list[BaseException] = []

        def work() -> None:
            try:
                self._decode_runs(take, out, 1)
            except BaseException as exc:  # handed to the calling thread
                errors.append(exc)

        # daemon threads, as in _bounded: a decoder stuck in C++ must not keep the process from exiting
        helpers_started = [threading.Thread(target=work, name=f"lrc-decode {os.path.basename(self.path)}", daemon=True)
                           for _ in range(helpers)]
        for t in helpers_started:
            t.start()
        for t in helpers_started:
            t.join()
        if errors:
            raise errors[0]
        return np.stack([out[i] for i in indices])

    def _decode_runs(self, take: Callable[[], Any], out: dict[int, np.ndarray], threads: int) -> None:
        """Decode the runs ``take()`` hands out, until it gives None, with one container."""
        import av

        with av.open(self.path) as container:
            stream = container.streams.video[0]
            _set_threads(stream, threads)
            while (run := take()) is not None:
                self._decode_run(container, stream, run[0], run[1], out)

    def _decode_run(self, container: Any, stream: Any, key: int, run: list[int], out: dict[int, np.ndarray]) -> None:
        """Seek to key frame ``key`` and decode on until every frame of ``run`` is in ``out``."""
        ctx = stream.codec_context
        want = {int(self._pts[i]): i for i in run}
        last, key_pts = int(self._pts[run[-1]]), int(self._pts[key])
        container.seek(key_pts, stream=stream, backward=True)
        first = True
        for packet in container.demux(stream):
            if first and packet.size:
                first = False
                if not packet.is_keyframe or packet.pts is None or packet.pts > key_pts:
                    raise _SeekFailed(f"the seek to frame {key} landed on another packet")
            # Frames nothing refers to are skipped unless wanted; the wanted ones and their references decode
            ctx.skip_frame = "DEFAULT" if packet.pts in want else "NONREF"
            frames = ctx.decode(packet)  # the empty packet at the end of the stream drains the decoder
            done = packet.pts == last or not packet.size
            if done and packet.size:
                ctx.skip_frame = "DEFAULT"
                frames = list(frames) + list(ctx.decode(None))  # the run's last frame is in: drain, no more input
            for frame in frames:
                index = want.get(frame.pts)
                if index is not None and index not in out:
                    out[index] = self._rgb(frame)
            if done:
                break
        if any(i not in out for i in run):
            raise _SeekFailed(f"frame {min(i for i in run if i not in out)} did not come out of the decoder")

    def _read_from_start(self, indices: list[int]) -> np.ndarray:
        """Decode the stream from its first frame, counting frames as they come out."""
        import av

        wanted: dict[int, list[int]] = {}  # frame index -> positions in the output
        for pos, index in enumerate(indices):
            wanted.setdefault(index, []).append(pos)
        last = max(wanted)
        out: list[np.ndarray | None] = [None] * len(indices)
        decoded = 0
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            _set_threads(stream, self.threads)
            for i, frame in enumerate(container.decode(stream)):
                decoded = i + 1
                if i in wanted:
                    rgb = self._rgb(frame)
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


class _DecordReader:
    """decord.VideoReader with the frame size fixed at open time (the optional backend)."""

    name = "decord"

    def __init__(self, path: str, size: int | None, threads: int = 1):
        import decord

        # decord reports FFmpeg's complaints about broken files on stderr; the caller gets our
        # VideoReadError instead, so keep the log quiet.
        decord.logging.set_level(decord.logging.QUIET)
        side = size if size is not None else -1  # -1: decord keeps the native size
        self.reader = decord.VideoReader(path, ctx=decord.cpu(0), width=side, height=side,
                                         num_threads=max(1, int(threads)))
        self.num_frames = len(self.reader)
        self.fps = float(self.reader.get_avg_fps())
        self.span: float | None = None  # seconds from the first frame's start to the last frame's end
        self.keyframes: np.ndarray | None = None
        if self.num_frames > 0:
            try:  # decord indexed every packet at open: the frames' own timestamps cost nothing
                first, last = self.reader.get_frame_timestamp([0, self.num_frames - 1])
                self.span = float(last[1] - first[0])
            except Exception:  # noqa: BLE001 - an index without timestamps: the average rate stands
                self.span = None
            try:
                keys = np.unique(np.asarray(self.reader.get_key_indices(), dtype=np.int64))
                self.keyframes = keys if len(keys) and keys[0] == 0 else None
            except Exception:  # noqa: BLE001 - no key frame index: approximate reads are exact
                self.keyframes = None

    def get_frames(self, indices: list[int]) -> np.ndarray:
        return self.reader.get_batch(indices).asnumpy()

    def close(self) -> None:
        # decord frees its demuxer and decoder when the reader is garbage-collected
        self.reader = None


def _open(backend: str, path: str, size: int | None, threads: int = 1) -> Any:
    return _DecordReader(path, size, threads) if backend == "decord" else _PyAVReader(path, size, threads)


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
    """One opened video: ``num_frames``, ``fps``, ``duration`` (seconds), ``backend``, ``keyframes``,
    ``get_frames`` (exact) and ``read`` (exact or approximate, with the frames' indices and timestamps).

    ``size``: when given, frames come out resized to ``size x size`` (aspect ratio is not kept, as
    the InternVL-style vision encoders take square inputs). ``backend``: force "pyav" or "decord" (decord
    must be installed: ``pip install "lrc-video[decord]"``); by default PyAV is tried first and decord, when
    installed, second. ``timeout_s``: the open and each ``get_frames`` call give up after this many seconds
    with ``VideoReadTimeout`` (a ``VideoReadError`` whose reason is "timed out after Ns"); None waits for
    ever. ``threads``: the decoder's threads. Use it as a context manager: the reader is closed on exit, also
    after an error or a timeout.
    """

    def __init__(self, path: str | os.PathLike, size: int | None = None, backend: str | None = None,
                 timeout_s: float | None = DataConfig.read_timeout_s, threads: int = 1):
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
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"VideoFile threads must be an int >= 1, got {threads!r}")
        if backend == "decord" and not decord_available():
            raise missing_dependency("the decord video backend (backend='decord')", "decord", "decord")
        self.threads = threads
        self._order = [backend] if backend else [b for b in BACKENDS if b != "decord" or decord_available()]

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

    @property
    def keyframes(self) -> np.ndarray | None:
        """The key frames' indices (sorted, from 0), or None where the file's index cannot tell them (then an
        approximate read is exact)."""
        return getattr(self._reader, "keyframes", None) if self._reader is not None else None

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
                reader = _open(name, self.path, self.size, self.threads)
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
        # Prefer a plain-language reason the decoders agree on ("zero frames", "no video stream").
        plain = [e for e in errors if not e.startswith(BACKENDS)]
        if plain:
            return plain[-1]
        return "cannot open as video: " + "; ".join(errors)

    def read(self, indices: Sequence[int], exact: bool = True) -> Frames:
        """Frames at ``indices`` with the indices and timestamps of what was read (:class:`Frames`). ``exact``:
        exactly those frames; else nearby key frames where that is cheaper (module docstring)."""
        return read_opened(self, indices, exact)

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 ``[T, H, W, 3]`` RGB."""
        if self._reader is None:
            closed = "video is closed; read frames inside the `with VideoFile(...)` block"
            raise VideoReadError(self.path, self._broken or closed)
        indices = [int(i) for i in indices]
        problem = index_problem(indices, self.num_frames)
        if problem:
            raise VideoReadError(self.path, problem)
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
        """Decode with the held reader; when it fails, switch ``held`` to the next backend in order, if any
        (worker thread)."""
        reader = held["reader"]
        try:
            return reader.get_frames(indices)
        except VideoReadError:
            raise
        except Exception as exc:
            following = self._order[self._order.index(reader.name) + 1:] if reader.name in self._order else []
            if not following:
                raise VideoReadError(self.path, f"decode failed: {_short(exc)}") from exc
            # the first backend opened the file but cannot decode these frames; the next one often gets
            # through. Stay on it for later calls on this file.
            first_error, other = _short(exc), following[0]
            reader.close()
            held["reader"] = None
            try:
                held["reader"] = _open(other, self.path, self.size, self.threads)
                return held["reader"].get_frames(indices)
            except VideoReadError as exc2:
                raise VideoReadError(self.path, f"{exc2.reason} ({reader.name}: {first_error})") from exc
            except Exception as exc2:
                raise VideoReadError(self.path, f"decode failed: {reader.name}: {first_error}; "
                                                f"{other}: {_short(exc2)}") from exc2

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


def read_opened(video: Any, indices: Sequence[int], exact: bool = True) -> Frames:
    """``indices`` of an opened video (a :class:`VideoFile`, or any reader of lrc/data/media.py) as
    :class:`Frames`. ``exact=False`` reads nearby key frames where :func:`approximate_indices` allows; a
    reader that knows no key frames (frame folders, GIFs, odd files) reads exactly either way."""
    requested = np.asarray([int(i) for i in indices], dtype=np.int64)
    keyframes = None if exact else getattr(video, "keyframes", None)
    chosen = requested
    if keyframes is not None and len(requested) and requested.min() >= 0 and requested.max() < video.num_frames:
        chosen = approximate_indices(requested, keyframes)
    frames = video.get_frames(chosen.tolist())
    return Frames(frames, chosen, chosen.astype(np.float64) / video.fps)
