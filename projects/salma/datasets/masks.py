"""COCO segmentations (polygons, uncompressed or compressed RLE) to binary masks.

All readers go through these two functions so polygons and RLEs are decoded the same way
(pycocotools ``frPyObjects`` -> ``decode`` -> union over parts, clipped to {0, 1}) and a mask whose
size disagrees with its image is an error, never a silently mis-shaped target.

RLE counts are checked before pycocotools sees them: runs that do not add up to H*W make it
decode uninitialised memory (short) or write past the mask (long), and a garbled counts string
gives a bare ``ValueError``. Compressed counts are decoded here as ``rleFrString`` in pycocotools'
``maskApi.c`` does (vectorised: a few microseconds per mask, see :func:`rle_string_counts`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .errors import DataError


def decode_segmentation(segm: Any, height: int, width: int, *, source: str = "") -> np.ndarray:
    """Decode one COCO ``segmentation`` to a uint8 {0,1} mask of shape (height, width).

    Args:
        segm: a list of polygons ``[[x0, y0, x1, y1, ...], ...]``, or an RLE dict
            ``{'size': [h, w], 'counts': list | str | bytes}``.
        height, width: the image size the mask must have.
        source: ``"<file>: <key>"`` used in error messages.
    """
    if isinstance(segm, dict):
        return decode_rle(segm, height, width, source=source)
    if isinstance(segm, (list, tuple)):
        for part in segm:
            if not isinstance(part, (list, tuple)) or not all(_is_number(v) for v in part):
                raise DataError(f"{source}: a polygon must be a list of numbers [x0, y0, x1, y1, ...], got "
                                f"{str(part)[:80]}", reason="bad_segmentation")
        # pycocotools reads a list whose first entry has 4 numbers as boxes, and a polygon needs
        # 3 points: drop degenerate (zero-area) parts, as COCO tools do.
        polygons = [list(map(float, p)) for p in segm if len(p) >= 6 and len(p) % 2 == 0]
        if not polygons:
            raise DataError(f"{source}: segmentation has no polygon with >= 3 points", reason="empty_segmentation")
        rles = mask_utils.frPyObjects(polygons, height, width)
        return _union(mask_utils.decode(rles))
    raise DataError(f"{source}: unsupported segmentation type {type(segm).__name__}", reason="bad_segmentation")


def decode_rle(rle: dict | None, height: int, width: int, *, source: str = "") -> np.ndarray:
    """Decode a COCO RLE (``None`` means an empty mask, as in MeViS ``mask_dict.json``)."""
    if rle is None:
        return np.zeros((height, width), dtype=np.uint8)
    if not isinstance(rle, dict) or "counts" not in rle or not isinstance(rle.get("size"), (list, tuple)) \
            or len(rle["size"]) != 2 or not all(_is_number(s) for s in rle["size"]):
        raise DataError(f"{source}: an RLE must be {{'size': [h, w], 'counts': ...}}, got {str(rle)[:80]}",
                        reason="bad_segmentation")
    size = [int(s) for s in rle["size"]]
    if size != [height, width]:
        raise DataError(
            f"{source}: RLE size {size} disagrees with the image size {[height, width]}", reason="rle_size"
        )
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        check_rle_counts(counts, height, width, source=source)
        rle = mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
    elif isinstance(counts, (str, bytes)):
        if isinstance(counts, str):
            if not counts.isascii():
                raise DataError(f"{source}: RLE counts string has non-ASCII characters", reason="rle_counts")
            counts = counts.encode("ascii")
        check_rle_counts(rle_string_counts(counts, source=source), height, width, source=source)
        rle = {"size": size, "counts": counts}
    else:
        raise DataError(f"{source}: RLE counts must be a list or a string, got {type(counts).__name__}",
                        reason="rle_counts")
    return _union(mask_utils.decode(rle))


def rle_string_counts(counts: bytes, *, source: str = "") -> np.ndarray:
    """Run lengths of a compressed COCO counts string (pycocotools' ``rleFrString``), int64.

    Each run is a little-endian base-32 number, one character ``48 + 6 bits`` per 5-bit group
    (bit 0x20: more groups follow; bit 0x10 of the last group: negative); from the third run on,
    the value is a delta to the run two places back. Characters outside '0'..'o' or a number cut
    short are a DataError('rle_counts').
    """
    c = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    bad = np.flatnonzero((c < 0) | (c > 63))
    if bad.size:
        raise DataError(f"{source}: RLE counts string has {chr(counts[bad[0]])!r} at {bad[0]} (outside the COCO "
                        f"alphabet '0'..'o')", reason="rle_counts")
    if not c.size:
        return np.zeros(0, dtype=np.int64)
    last = (c & 0x20) == 0  # the last character of each number
    if not last[-1]:
        raise DataError(f"{source}: RLE counts string ends inside a number", reason="rle_counts")
    ends = np.flatnonzero(last)
    starts = np.concatenate([[0], ends[:-1] + 1])
    k = np.arange(c.size) - np.repeat(starts, ends - starts + 1)  # position of each character in its number
    if k.max() > 6:  # 7 characters hold 35 bits: more is not a 32-bit run length
        raise DataError(f"{source}: RLE counts string has a number of {k.max() + 1} characters", reason="rle_counts")
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.int64(1) << (5 * (k[ends[negative]] + 1))
    runs = x.copy()  # runs[m] = x[m] + runs[m - 2] for m > 2: cumulative sums along each parity from 1 and 2
    runs[1::2] = np.cumsum(x[1::2])
    runs[2::2] = np.cumsum(x[2::2])
    return runs


def check_rle_counts(counts, height: int, width: int, *, source: str = "") -> None:
    """Run lengths must be non-negative integers adding up to ``height * width``."""
    runs = np.asarray(counts)
    if runs.ndim != 1 or (runs.size and runs.dtype.kind not in "iu"):
        raise DataError(f"{source}: RLE counts must be integers, got {str(counts)[:80]}", reason="rle_counts")
    total = int(runs.sum()) if runs.size else 0
    if runs.size and runs.min() < 0:
        raise DataError(f"{source}: RLE counts have a negative run ({int(runs.min())})", reason="rle_counts")
    if total != height * width:
        raise DataError(f"{source}: RLE counts add up to {total} pixels, not {height}x{width} = {height * width}",
                        reason="rle_counts")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _union(decoded: np.ndarray) -> np.ndarray:
    # decode gives (H, W) for one RLE and (H, W, n) for a list; union the parts, clip to {0, 1}.
    if decoded.ndim == 3:
        decoded = decoded.max(axis=2)
    return np.ascontiguousarray(np.minimum(decoded, 1).astype(np.uint8))


def encode_mask(mask: np.ndarray) -> dict:
    """Binary (H, W) mask to a json-ready compressed RLE ``{'size': [h, w], 'counts': str}``."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
