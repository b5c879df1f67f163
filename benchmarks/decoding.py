"""Sparse frame decoding: lrc's reader (exact and approximate) against PyAV seeking, decord and decoding everything.

What. 16 and 64 frames at segment midpoints (the ``uniform`` sampler's indices) of a long H.264 video, read by

* ``lrc-exact``: ``lrc.data.video.VideoFile(...).read(indices)``, lrc's reader (PyAV, the open-time index,
  runs of frames decoded from their key frames, non-reference frames skipped);
* ``lrc-approx``: the same with ``exact=False`` (nearby key frames where they are closer to a requested frame
  than to any other one);
* ``pyav-seek``: plain PyAV keyframe seeking, as one would write it: for each frame, seek to its timestamp
  (FFmpeg lands on the key frame before it) and decode until it comes out;
* ``decord-threaded``: ``decord.VideoReader(num_threads=--threads).get_batch(indices)`` (if decord is installed);
* ``decord-1thread``: the same with one thread — what lrc did before (its reader was decord with one thread);
* ``decode-all``: PyAV decoding every frame up to the last one asked for, converting only those.

Every variant opens the file itself (open time included), decodes with ``--threads`` decoder threads where it
has any, and converts to RGB at the native size (``--size`` resizes). All (frame count, variant) pairs run
interleaved in one process (benchmarks/_common.py: one warm-up round, then every repetition runs each once,
the order rotating), so the machine's noise hits them alike; the table gives each one's median time and the
medians of its per-repetition ratios to ``pyav-seek``, to the faster of ``pyav-seek`` and ``decord-threaded``
in that repetition ("the best exact alternative") and to ``decode-all`` of the same frame count, with the load
average (``os.getloadavg``) before and after. The warm-up round's outputs are checked: exact variants
against decode-all's frames (pixel for pixel, or their mean absolute difference where they differ), and for
the approximate read how far its frames are from the requested ones (tests/data/test_read_frames.py checks
that they are the frames they say they are).

The video is made once with PyAV's libx264 (10 min at 30 fps, 320×240, a key frame every 250 frames, no
scene-cut key frames; moving texture and a moving square, so inter frames carry real work) and kept in
``--cache`` (default ``~/.cache/lrc/benchmarks``); ``--quick`` makes a 60-second one and runs 2 repetitions.
torchcodec is not among the variants: it needs FFmpeg's shared libraries installed on the system (it bundles
none), which this machine lacks.

    python benchmarks/decoding.py                  # 10-minute video, 5 paired repetitions
    python benchmarks/decoding.py --quick
    python benchmarks/decoding.py --json out.json  # --from-json out.json prints the tables again
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from _common import (add_output_args, describe_run, machine, markdown_table, median_ratio, paired, read_json,
                     write_json)

from lrc.cpus import available_cpus
from lrc.data.video import VideoFile, decord_available

BENCHMARK = "decoding"

VARIANTS = ("lrc-exact", "lrc-approx", "pyav-seek", "decord-threaded", "decord-1thread", "decode-all")
ALTERNATIVES = ("pyav-seek", "decord-threaded")  # the exact readers lrc's exact mode is held against


def make_video(path: Path, seconds: float, fps: int, width: int, height: int, gop: int) -> None:
    """The test video: a panning random texture with a square sliding over it, H.264, one key frame every
    ``gop`` frames (x264's default interval, scene cuts off so the interval is exact)."""
    import av

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0", "preset": "veryfast"}
        for i in range(int(seconds * fps)):
            x = int(width / 2 * (1 + np.sin(i / 200)))
            y = int(height / 2 * (1 + np.cos(i / 300)))
            image = texture[y:y + height, x:x + width].copy()
            top, left = (i * 2) % (height - 40), (i * 3) % (width - 40)
            image[top:top + 40, left:left + 40] = (255, (i * 7) % 256, 0)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)


def _rgb(frame, size):
    return frame.to_ndarray(format="rgb24") if size is None else frame.to_ndarray(format="rgb24", width=size,
                                                                                     height=size)


def _threads(stream, threads: int) -> None:
    stream.thread_count = threads
    stream.thread_type = "AUTO" if threads > 1 else "SLICE"


def pyav_seek(path: str, indices: list[int], size, threads: int) -> np.ndarray:
    """For each frame: seek to its timestamp (FFmpeg lands on the key frame before it), decode until it is out."""
    import av

    out = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        _threads(stream, threads)
        rate, base, start = Fraction(stream.average_rate), stream.time_base, stream.start_time or 0
        for index in indices:
            target = start + int(round(Fraction(index) / rate / base))
            container.seek(target, stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts >= target:
                    out.append(_rgb(frame, size))
                    break
    return np.stack(out)


def decode_all(path: str, indices: list[int], size, threads: int) -> np.ndarray:
    """Every frame decoded in order up to the last one asked for; only the asked ones converted."""
    import av

    wanted, last, out = set(indices), max(indices), {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        _threads(stream, threads)
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                out[i] = _rgb(frame, size)
            if i >= last:
                break
    return np.stack([out[i] for i in indices])


def decord_batch(path: str, indices: list[int], size, threads: int) -> np.ndarray:
    import decord

    side = size if size is not None else -1
    return decord.VideoReader(path, ctx=decord.cpu(0), width=side, height=side, num_threads=threads
                              ).get_batch(indices).asnumpy()


def run_variant(variant: str, path: str, indices: list[int], args: argparse.Namespace):
    """(frames, frame indices returned)."""
    if variant in ("lrc-exact", "lrc-approx"):
        with VideoFile(path, size=args.size, threads=args.threads, timeout_s=None) as video:
            got = video.read(indices, exact=variant == "lrc-exact")
        return got.frames, got.indices
    fn = {"pyav-seek": pyav_seek, "decode-all": decode_all}.get(variant, decord_batch)
    threads = 1 if variant == "decord-1thread" else args.threads
    return fn(path, indices, args.size, threads), np.asarray(indices)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=None, help="video length (default 600; 60 with --quick)")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--gop", type=int, default=250, help="frames from one key frame to the next")
    p.add_argument("--frames", default="16,64", help="frame counts to sample, comma-separated")
    p.add_argument("--size", type=int, default=None, help="resize frames to size x size (default: native)")
    p.add_argument("--threads", type=int, default=available_cpus(), help="decoder threads (default: the CPUs "
                   "this process may use, as run.threads)")
    p.add_argument("--repeats", type=int, default=None, help="paired repetitions (default 5; 2 with --quick)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "lrc" / "benchmarks"))
    p.add_argument("--quick", action="store_true", help="a 60-second video and 2 repetitions")
    add_output_args(p)
    args = p.parse_args()
    if args.from_json:
        print(table(read_json(args.from_json, BENCHMARK)))
        return
    args.seconds = args.seconds or (60.0 if args.quick else 600.0)
    args.repeats = args.repeats or (2 if args.quick else 5)
    counts = [int(c) for c in args.frames.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    if not decord_available():
        variants = [v for v in variants if not v.startswith("decord")]
        print("decord is not installed: its variants are left out", file=sys.stderr)

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"decoding-{args.seconds:g}s-{args.fps}fps-{args.width}x{args.height}-gop{args.gop}.mp4"
    if not path.exists():
        began = time.perf_counter()
        make_video(path, args.seconds, args.fps, args.width, args.height, args.gop)
        print(f"made {path} in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    with VideoFile(path, timeout_s=None) as video:
        total = video.num_frames
        keyframes = len(video.keyframes) if video.keyframes is not None else None
    plans = {k: np.floor((np.arange(k) + 0.5) * total / k).astype(int).tolist() for k in counts}

    # every (frame count, variant) pair in one paired run; the warm-up round's outputs are what is checked
    outputs: dict[str, tuple] = {}

    def job(k: int, v: str):
        def run() -> None:
            out = run_variant(v, str(path), plans[k], args)
            outputs.setdefault(f"{k}/{v}", out)
        return run

    seconds, load = paired({f"{k}/{v}": job(k, v) for k in counts for v in variants}, args.repeats, progress=True)
    rows = []
    for k in counts:
        checks = check({v: outputs[f"{k}/{v}"] for v in variants}, plans[k])
        for v in variants:
            times = seconds[f"{k}/{v}"]
            row = {"frames": k, "variant": v, "median_s": round(statistics.median(times), 3),
                   "min_s": round(min(times), 3), "check": checks.get(v, "")}
            for base in ("pyav-seek", "decode-all"):
                if base in variants:
                    row[f"ratio_to_{base}"] = round(median_ratio(times, seconds[f"{k}/{base}"]), 3)
            best = best_alternative(seconds, k, variants)
            if best is not None:
                row["ratio_to_best_alternative"] = round(median_ratio(times, best), 3)
            rows.append(row)
    result = {"video": (f"{args.seconds:g} s, {args.fps} fps, {args.width}x{args.height} H.264, {total} frames, "
                        f"{keyframes} key frames (one every {args.gop})"),
              "size": args.size, "decoder_threads": args.threads, "cpus": available_cpus(),
              "machine": machine(load, args.repeats), "seconds": seconds, "rows": rows}
    print(table(result))
    if args.json:
        write_json(args.json, BENCHMARK, result)


def best_alternative(seconds: dict[str, list[float]], k: int, variants: list[str]) -> list[float] | None:
    """Per repetition, the faster of the exact alternatives to lrc (PyAV seeking, threaded decord) at ``k`` frames."""
    found = [seconds[f"{k}/{v}"] for v in ALTERNATIVES if v in variants]
    return [min(times) for times in zip(*found)] if found else None


def check(results: dict, indices: list[int]) -> dict[str, str]:
    """What each variant returned, against decode-all's frames (when decode-all ran)."""
    out = {}
    reference = results.get("decode-all", (None,))[0]
    for v, (frames, returned) in results.items():
        if v == "lrc-approx":
            offset = np.abs(np.asarray(returned) - np.asarray(indices))
            ordered = bool(np.all(np.diff(returned) > 0))
            out[v] = (f"{int((offset > 0).sum())} of {len(indices)} moved to key frames, at most {int(offset.max())} "
                      f"frames away; " + ("distinct, in order" if ordered else "NOT in order"))
            continue
        if reference is None or v == "decode-all":
            continue
        if frames.shape != reference.shape:
            out[v] = f"shape {frames.shape}"
        elif np.array_equal(frames, reference):
            out[v] = "identical to decode-all"
        else:
            out[v] = f"mean abs diff {np.abs(frames.astype(int) - reference.astype(int)).mean():.2f}"
    return out


def table(result: dict) -> str:
    """The Markdown of a result (what --json writes): a function of it alone."""
    size = "native size" if result["size"] is None else f"{result['size']}x{result['size']}"
    lines = [f"Sparse decoding of {result['video']}; frames at {size}; {result['decoder_threads']} decoder "
             f"thread(s), {result['cpus']} CPUs. {describe_run(result['machine'])}", ""]
    header = ["frames", "variant", "median s", "min s", "ratio to pyav-seek", "ratio to the best exact alternative",
              "ratio to decode-all", "check"]
    lines += markdown_table(header, ([r["frames"], r["variant"], r["median_s"], r["min_s"],
                                      r.get("ratio_to_pyav-seek", ""), r.get("ratio_to_best_alternative", ""),
                                      r.get("ratio_to_decode-all", ""), r["check"]]
                                     for r in result["rows"]), "rlrrrrrl")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
