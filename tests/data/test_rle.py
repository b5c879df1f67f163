"""COCO RLE: our numpy codec against the format's definition and, when installed, pycocotools."""

from __future__ import annotations

import numpy as np
import pytest

from lrc.data.rle import RLEError, area, check, counts_to_string, decode, encode, string_to_counts


def _random_masks(n: int = 300):
    rng = np.random.default_rng(0)
    for t in range(n):
        h, w = (int(v) for v in rng.integers(1, 30, size=2))
        kind = t % 4
        if kind == 0:
            yield rng.random((h, w)) < rng.random()
        elif kind == 1:
            yield np.zeros((h, w), bool)
        elif kind == 2:
            yield np.ones((h, w), bool)
        else:
            m = np.zeros((h, w), bool)
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            m[y0:y0 + rng.integers(1, h + 1), x0:x0 + rng.integers(1, w + 1)] = True
            yield m


def test_runs_are_column_major_and_start_with_background():
    m = np.zeros((4, 3), bool)
    m[1:3, 1] = True  # column 0: 0000, column 1: 0110, column 2: 0000 -> runs 5 zeros, 2 ones, 5 zeros
    assert encode(m) == {"size": [4, 3], "counts": "525"}
    assert decode({"size": [4, 3], "counts": [5, 2, 5]}).tolist() == m.tolist()
    # a mask whose first pixel is set starts with an empty background run
    assert encode(np.ones((2, 2), bool)) == {"size": [2, 2], "counts": "04"}
    assert encode(np.zeros((2, 3), bool)) == {"size": [2, 3], "counts": "6"}


@pytest.mark.parametrize("shape, fill, expected", [
    # strings pycocotools 2.0 writes for these masks (mask.encode on a Fortran uint8 array)
    ((10, 10), (slice(2, 8), slice(3, 9)), "P1640000000008"),
    ((100, 100), [(slice(10, 90), slice(20, 30)), (slice(0, 1), slice(99, 100))], "jn1`2d000000000000000000Zg6aMU[I"),
    ((64, 64), [(slice(None), slice(0, 1)), (slice(40, None), slice(10, 11))], "0P2Xc0hNhf2"),
])
def test_known_coco_strings(shape, fill, expected):
    m = np.zeros(shape, bool)
    for rows, cols in fill if isinstance(fill, list) else [fill]:
        m[rows, cols] = True
    assert encode(m)["counts"] == expected
    assert (decode({"size": list(shape), "counts": expected}) == m).all()


def test_large_counts_and_negative_deltas():
    # counts past 31 need several 5-bit groups; from the 4th count on, differences can be negative
    counts = [1000, 3, 40, 1, 5000 - 1044]
    text = counts_to_string(counts)
    assert string_to_counts(text) == counts
    assert sum(counts) == 5000
    assert decode({"size": [50, 100], "counts": text}).sum() == 4


def test_round_trip_random_masks():
    for m in _random_masks():
        rle = encode(m)
        assert rle["size"] == list(m.shape)
        assert check(rle) is None
        back = decode(rle)
        assert back.dtype == bool and back.shape == m.shape and (back == m).all()
        assert area(rle) == int(m.sum())
        # the uncompressed form (list of run lengths) decodes the same
        assert (decode({"size": rle["size"], "counts": string_to_counts(rle["counts"])}) == m).all()


@pytest.mark.parametrize("rle, message", [
    ({"size": [2, 2]}, "counts"),
    ({"size": [2], "counts": "04"}, "size"),
    ({"size": [2, 2], "counts": ""}, "empty"),
    ({"size": [2, 2], "counts": "0 4"}, "character"),
    ({"size": [2, 2], "counts": [1, 2]}, "add up"),
    ("04", "RLE object"),
])
def test_bad_rle(rle, message):
    assert message in check(rle)
    with pytest.raises(RLEError, match=message):
        decode(rle)


def test_decode_rejects_a_string_that_does_not_fill_the_mask():
    with pytest.raises(RLEError, match="add up"):
        decode({"size": [3, 3], "counts": "04"})


def test_matches_pycocotools_when_installed():
    mask_api = pytest.importorskip("pycocotools.mask")
    for m in _random_masks(200):
        ref = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
        ours = encode(m)
        assert ours["counts"] == ref["counts"].decode("ascii")
        assert ours["size"] == [int(v) for v in ref["size"]]
        assert (mask_api.decode(ref).astype(bool) == decode(ours)).all()
