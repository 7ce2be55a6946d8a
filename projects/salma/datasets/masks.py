"""COCO segmentations (polygons, uncompressed or compressed RLE) to binary masks.

All readers go through these two functions so polygons and RLEs are decoded the same way
(pycocotools ``frPyObjects`` -> ``decode`` -> union over parts, clipped to {0, 1}) and a mask whose
size disagrees with its image is an error, never a silently mis-shaped target.
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
    size = [int(s) for s in rle.get("size", ())]
    if size != [height, width]:
        raise DataError(
            f"{source}: RLE size {size} disagrees with the image size {[height, width]}", reason="rle_size"
        )
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(rle, height, width)
    elif isinstance(counts, str):
        rle = {"size": size, "counts": counts.encode("ascii")}
    return _union(mask_utils.decode(rle))


def _union(decoded: np.ndarray) -> np.ndarray:
    # decode gives (H, W) for one RLE and (H, W, n) for a list; union the parts, clip to {0, 1}.
    if decoded.ndim == 3:
        decoded = decoded.max(axis=2)
    return np.ascontiguousarray(np.minimum(decoded, 1).astype(np.uint8))


def encode_mask(mask: np.ndarray) -> dict:
    """Binary (H, W) mask to a json-ready compressed RLE ``{'size': [h, w], 'counts': str}``."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
