"""COCO run-length encoding (RLE) of binary masks, in plain numpy.

    rle = encode(mask)                 # bool [H, W] -> {"size": [H, W], "counts": "<compressed string>"}
    mask = decode(rle)                 # also accepts {"size": ..., "counts": [run lengths]}

This is the format of COCO, SA-V/SAM2 and most video-segmentation annotations, so masks in lrc's
annotation files (docs/data.md, ``track.masks``) can be copied from such data sets unchanged.

The format (pycocotools' ``maskApi.c``):

* the mask is read in **column-major** order (down the first column, then the second, ...);
* ``counts`` are the lengths of alternating runs, starting with a run of 0s (so a mask whose first
  pixel is set starts with a 0 count); the counts add up to H·W;
* the compressed string stores each count ``x`` (from the fourth count on, ``x`` minus the count two
  places before it: runs of an object's columns are similar) as a signed little-endian base-32
  number: 5-bit groups, each group written as ``chr(48 + group)`` with ``0x20`` set on every group but
  the last, and the last group's ``0x10`` bit being the sign.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class RLEError(ValueError):
    """An RLE dict that is not valid COCO RLE."""


def _runs(mask: np.ndarray) -> list[int]:
    flat = np.asarray(mask, dtype=bool).reshape(-1, order="F")
    if flat.size == 0:
        return [0]
    # positions where the value changes, with the start (a 0-run first) and the end
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    return [int(r) for r in runs]


def counts_to_string(counts: list[int]) -> str:
    """Compress run lengths into COCO's string form."""
    chars: list[str] = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: negative numbers end at -1
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return "".join(chars)


def string_to_counts(text: str) -> list[int]:
    """Inverse of :func:`counts_to_string`."""
    counts: list[int] = []
    p = 0
    n = len(text)
    while p < n:
        x = 0
        k = 0
        more = True
        while more:
            if p >= n:
                raise RLEError(f"RLE counts string ends inside a number: {text[:40]!r}")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise RLEError(f"RLE counts string has character {text[p]!r} outside '0'..'o'")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)  # sign-extend
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode(mask: np.ndarray) -> dict[str, Any]:
    """Bool ``[H, W]`` -> ``{"size": [H, W], "counts": str}`` (COCO compressed RLE)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise RLEError(f"encode: expected a 2-D mask [H, W], got shape {tuple(mask.shape)}")
    h, w = mask.shape
    return {"size": [int(h), int(w)], "counts": counts_to_string(_runs(mask))}


def check(rle: Any) -> str | None:
    """What is wrong with ``rle`` as a COCO RLE dict (cheap: does not decode), or None."""
    if not isinstance(rle, dict):
        return f"must be a COCO RLE object {{'size': [h, w], 'counts': ...}}, got {type(rle).__name__}"
    size, counts = rle.get("size"), rle.get("counts")
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        shown = repr(size) if len(repr(size)) <= 80 else repr(size)[:60] + "..."
        return f"size must be [height, width] of positive ints, got {shown}"
    if isinstance(counts, str):
        if not counts:
            return "counts is an empty string"
        bad = [ch for ch in counts if not 48 <= ord(ch) < 112]
        if bad:
            return f"counts string has character {bad[0]!r} outside '0'..'o' (not COCO compressed RLE)"
        return None
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            return "counts list must hold non-negative ints"
        if sum(counts) != size[0] * size[1]:
            return f"counts add up to {sum(counts)}, expected height*width = {size[0] * size[1]}"
        return None
    return f"counts must be a compressed string or a list of run lengths, got {type(counts).__name__}"


def decode(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (compressed string or list of run lengths) -> bool ``[H, W]``."""
    problem = check(rle)
    if problem:
        raise RLEError(f"decode: {problem}")
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = string_to_counts(counts)
    counts = np.asarray(counts, dtype=np.int64)
    if (counts < 0).any():
        raise RLEError("decode: negative run length (corrupt counts string)")
    if counts.sum() != h * w:
        raise RLEError(f"decode: runs add up to {int(counts.sum())} pixels, expected {h}*{w} = {h * w}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((h, w), order="F")


def area(rle: dict[str, Any]) -> int:
    """Number of set pixels, without decoding to a mask."""
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = string_to_counts(counts)
    return int(sum(counts[1::2]))
