"""Segmentation metrics: DAVIS-2017 J/F, referring-VOS and ReVOS aggregation, RES cIoU/gIoU.

Every definition follows docs/metrics.md so that numbers are comparable
with published ones:

* **J** and **F** are the DAVIS-2017 definitions of the ``davis2017-evaluation`` toolkit
  (``davis2017/metrics.py``: ``db_eval_iou``, ``db_eval_boundary`` / ``f_measure`` /
  ``_seg2bmap`` for a same-size boundary map, dilation by ``skimage.morphology.disk``), and
  :func:`db_statistics` is ``davis2017/utils.py::db_statistics`` (mean, recall, decay).
  The results are bit-identical to a per-frame implementation of those definitions; only the
  computation differs: masks are bit-packed along rows (64 pixels per ``uint64`` word) and all
  frames of a call are processed together, so the disk dilation of every boundary map is a few
  dozen word-wise shift/OR operations instead of one full-image pass per disk offset
  (``bench/metric_speed.py`` measures the difference).
* **Referring-VOS** (MeViS, ReVOS, Ref-DAVIS17 as evaluated by Sa2VA / VISA): per expression J and
  F are averaged over all its frames (:func:`video_jf`); the split's J, F are means over
  expressions and J&F = (J + F) / 2. The aggregation functions report **x100** (percent).
* **ReVOS** A (pixel accuracy) and R (robustness) follow the ReVOS/VISA evaluator
  (``eval_revos.py``: ``get_r2vos_accuracy``, ``get_r2vos_robustness``): both are computed per
  frame and averaged over the expression's frames (R pooled over frames is available as an
  option, not the published protocol); per type means, overall = (referring + reasoning) / 2,
  type 2 excluded.
* **RES** (RefCOCO family): cIoU = sum(inter) / sum(union) over the split, gIoU = mean of per
  sentence IoU with an empty union counting 1.0; a sentence without a predicted mask counts as
  an empty prediction (strict). Sa2VA's evaluator skipped such sentences; that number is
  available as ``*_lenient`` and labelled as such.

Masks may be numpy arrays or torch tensors; any non-zero value is foreground.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = [
    "db_eval_iou",
    "db_eval_boundary",
    "db_statistics",
    "boundary_map",
    "boundary_tolerance",
    "disk",
    "dilate_disk",
    "frame_jf",
    "video_jf",
    "ExpressionScores",
    "RESAccumulator",
    "res_metrics",
    "revos_accuracy",
    "revos_robustness",
    "revos_accuracy_and_robustness",
    "frame_accuracy_and_robustness",
    "aggregate_revos",
    "aggregate_refvos",
]

# Frames packed and processed per block: a block's working arrays stay cache-resident at 480x854
# (8 frames x 480 rows x 14 words x 8 B = 430 KB per array); 4..16 measured about the same.
_FRAME_BLOCK = 8
_WORD_BITS = 64
_LE_U64 = np.dtype("<u8")  # bit j of word w is pixel 64*w + j on every host
_POPCOUNT_U8 = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)

# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    """numpy view of an array or torch tensor (without importing torch here)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_bool(x: Any) -> np.ndarray:
    """Foreground as bool: any non-zero value is foreground."""
    x = _to_numpy(x)
    return x if x.dtype == np.bool_ else x != 0


def _frames(x: Any, name: str) -> np.ndarray:
    """(H,W) or (T,H,W) -> (T,H,W), dtype kept: conversion to bool happens per frame block."""
    m = _to_numpy(x)
    if m.ndim == 2:
        return m[None]
    if m.ndim == 3:
        return m
    raise ValueError(f"{name} must be (H,W) or (T,H,W), got shape {m.shape}")


def _check_same_shape(**arrays: np.ndarray) -> None:
    """Metrics compare pixel by pixel: mismatched shapes are a caller bug, never broadcast."""
    shapes = {k: v.shape for k, v in arrays.items() if v is not None}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shape mismatch: {shapes}")


# --------------------------------------------------------------------------------------------
# bit-packed rows
# --------------------------------------------------------------------------------------------


def _pack_rows(m: np.ndarray) -> np.ndarray:
    """(N,H,W), non-zero = foreground -> little-endian uint64 (N,H,ceil(W/64)); padding bits 0.

    Packing makes one numpy op handle 64 pixels and turns a horizontal pixel shift into a
    word shift with carry, a vertical one into a row slice.
    """
    m = _as_bool(m)
    n, h, w = m.shape
    packed = np.packbits(m, axis=-1, bitorder="little")  # (N,H,ceil(W/8)) uint8
    n_words = -(-w // _WORD_BITS)
    if packed.shape[-1] != 8 * n_words:
        padded = np.zeros((n, h, 8 * n_words), np.uint8)
        padded[..., : packed.shape[-1]] = packed
        packed = padded
    return np.ascontiguousarray(packed).view(_LE_U64)  # (N,H,n_words)


def _unpack_rows(p: np.ndarray, width: int) -> np.ndarray:
    """Inverse of :func:`_pack_rows`: uint64 (N,H,n_words) -> bool (N,H,width)."""
    bits = np.unpackbits(p.view(np.uint8), axis=-1, count=width, bitorder="little")
    return bits.astype(bool)


def _popcount_lut(p: np.ndarray) -> np.ndarray:
    """Per-frame set-bit count through a byte table (numpy < 2.0 has no bitwise_count)."""
    as_bytes = p.reshape(p.shape[0], -1).view(np.uint8)  # (N, H*n_words*8)
    return _POPCOUNT_U8[as_bytes].sum(axis=1, dtype=np.int64)


def _popcount(p: np.ndarray) -> np.ndarray:
    """uint64 (N,H,n_words) -> int64 (N,) number of set bits (= foreground pixels) per frame."""
    if not hasattr(np, "bitwise_count"):
        return _popcount_lut(p)
    return np.bitwise_count(p).reshape(p.shape[0], -1).sum(axis=1, dtype=np.int64)


def _or_shifted(acc: np.ndarray, x: np.ndarray, k: int) -> None:
    """acc |= x moved horizontally so that pixel j of acc receives pixel j+k of x.

    k > 0 looks east, k < 0 west; pixels moved outside the row are dropped (zero border, as
    cv2.dilate's default border for dilation). Shapes (..., n_words).
    """
    n_words = x.shape[-1]
    q, s = divmod(abs(k), _WORD_BITS)
    if k == 0:
        acc |= x
        return
    if q >= n_words:  # moved entirely out of the row
        return
    if k > 0:
        src, dst = x[..., q:], acc[..., : n_words - q]
        if s == 0:
            dst |= src
            return
        dst |= src >> s
        dst[..., :-1] |= src[..., 1:] << (_WORD_BITS - s)  # carry from the next word
    else:
        src, dst = x[..., : n_words - q], acc[..., q:]
        if s == 0:
            dst |= src
            return
        dst |= src << s
        dst[..., 1:] |= src[..., :-1] >> (_WORD_BITS - s)  # carry from the previous word


def _east_valid_mask(width: int, n_words: int) -> np.ndarray:
    """uint64 (n_words,) with bits set for columns 0..W-2, the columns that have an east pixel."""
    cols = np.zeros(n_words * _WORD_BITS, dtype=bool)
    cols[: width - 1] = True
    return np.packbits(cols, bitorder="little").view(_LE_U64)


def _packed_boundary(s: np.ndarray, width: int) -> np.ndarray:
    """DAVIS ``_seg2bmap`` on packed masks (N,H,n_words) -> packed boundary (N,H,n_words).

    A pixel is boundary if it differs from its east, south or south-east neighbour; the last
    row compares east only, the last column south only, the bottom-right pixel is 0. The
    east-valid mask removes comparisons against padding/absent columns.
    """
    east_ok = _east_valid_mask(width, s.shape[-1])
    east = s >> 1  # east[j] = s[j+1]
    east[..., :-1] |= s[..., 1:] << (_WORD_BITS - 1)
    b = (s ^ east) & east_ok  # all rows: east comparison
    # rows 0..H-2 add south and south-east comparisons
    b[:, :-1] |= (s[:, :-1] ^ s[:, 1:]) | ((s[:, :-1] ^ east[:, 1:]) & east_ok)
    return b


def _row_dilations(b: np.ndarray, half_widths: Iterable[int]) -> dict[int, np.ndarray]:
    """Horizontal dilations of b by [-w, w] for each requested w, built as one doubling chain.

    If y covers [-c, c], then y | y<<s | y>>s covers [-(c+s), c+s] for any s <= 2c+1, so the
    whole set costs O(log r + number of widths) shifted ORs instead of 2r.
    """
    runs, y, covered = {0: b}, b, 0
    for w in sorted(set(half_widths)):
        while covered < w:
            step = min(2 * covered + 1, w - covered)
            z = y.copy()
            _or_shifted(z, y, step)
            _or_shifted(z, y, -step)
            y, covered = z, covered + step
        runs[w] = y
    return runs


def _disk_half_widths(radius: int) -> list[int]:
    """Half-width of disk(radius) at vertical offset h = 0..radius (x^2 + h^2 <= r^2)."""
    return [math.isqrt(radius * radius - h * h) for h in range(radius + 1)]


def _packed_dilate_disk(b: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of packed (N,H,n_words) maps by ``disk(radius)``, zero border.

    The disk is the union over rows dy of the segments [-w_|dy|, w_|dy|]: the few distinct
    horizontal dilations (the expensive, bit-shifting part) are shared, and each disk row is
    then one row-sliced OR (cheap).
    """
    widths = _disk_half_widths(radius)
    runs = _row_dilations(b, widths)
    out = runs[widths[0]].copy()
    for dy in range(1, radius + 1):  # row i gets rows i+dy and i-dy dilated by w_dy
        row = runs[widths[dy]]
        out[:, :-dy] |= row[:, dy:]
        out[:, dy:] |= row[:, :-dy]
    return out


# --------------------------------------------------------------------------------------------
# DAVIS J / F
# --------------------------------------------------------------------------------------------


def disk(radius: int) -> np.ndarray:
    """``skimage.morphology.disk(radius)`` as bool: x^2 + y^2 <= r^2 on a (2r+1)^2 grid."""
    if radius < 0 or int(radius) != radius:
        raise ValueError(f"disk radius must be a non-negative integer, got {radius}")
    r = int(radius)
    offsets = np.arange(-r, r + 1)
    return offsets[None, :] ** 2 + offsets[:, None] ** 2 <= r * r


def boundary_tolerance(height: int, width: int, bound_th: float = 0.008) -> int:
    """DAVIS tolerance in pixels: ceil(bound_th * ||(H, W)||), or bound_th itself if >= 1."""
    if bound_th >= 1:
        if int(bound_th) != bound_th:
            # skimage.disk of a fractional radius has an even size: not a DAVIS configuration.
            raise ValueError(f"bound_th >= 1 is a pixel radius and must be integral: {bound_th}")
        return int(bound_th)
    return int(np.ceil(bound_th * np.linalg.norm((height, width))))


def boundary_map(mask: Any) -> np.ndarray:
    """DAVIS ``_seg2bmap`` (same-size output): (H,W) or (T,H,W) -> bool of the same shape."""
    m = _frames(mask, "mask")
    b = _unpack_rows(_packed_boundary(_pack_rows(m), m.shape[-1]), m.shape[-1])
    return b[0] if np.ndim(mask) == 2 else b


def dilate_disk(mask: Any, radius: int) -> np.ndarray:
    """Binary dilation by ``disk(radius)`` with a zero border (as ``cv2.dilate``), (H,W)/(T,H,W)."""
    disk(radius)  # validates the radius
    m = _frames(mask, "mask")
    d = _unpack_rows(_packed_dilate_disk(_pack_rows(m), int(radius)), m.shape[-1])
    return d[0] if np.ndim(mask) == 2 else d


def _frame_counts(
    annotation: np.ndarray,
    segmentation: np.ndarray,
    void: np.ndarray | None,
    bound_pix: int | None,
) -> dict[str, np.ndarray]:
    """Per-frame integer counts behind J (and F when ``bound_pix`` is given).

    Inputs (T,H,W), non-zero = foreground. Returns int64 (T,) arrays: ``inter``, ``union``
    and, for F, ``n_fg``/``n_gt`` (boundary sizes of segmentation/annotation) and ``fg_match``/``gt_match``
    (|Pb & dil(Gb)|, |Gb & dil(Pb)|). Frames go in blocks so the working set stays in cache, and
    each block is dilated only inside the window that holds its boundary pixels.
    """
    keys = ["inter", "union"]
    if bound_pix is not None:
        keys += ["n_fg", "n_gt", "fg_match", "gt_match"]
    out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    width = annotation.shape[-1]
    for t0 in range(0, annotation.shape[0], _FRAME_BLOCK):
        block = slice(t0, t0 + _FRAME_BLOCK)
        gt, pred = _pack_rows(annotation[block]), _pack_rows(segmentation[block])  # (n,H,words)
        if void is not None:  # DAVIS multiplies both masks by not(void) before anything else
            keep = ~_pack_rows(void[block])
            gt, pred = gt & keep, pred & keep
        out["inter"].append(_popcount(gt & pred))
        out["union"].append(_popcount(gt | pred))
        if bound_pix is None:
            continue
        pb, gb = _packed_boundary(pred, width), _packed_boundary(gt, width)
        out["n_fg"].append(_popcount(pb))
        out["n_gt"].append(_popcount(gb))
        window = _bounding_window(pb | gb)
        if window is None:  # no boundary in the block: nothing can match
            out["fg_match"].append(np.zeros(len(pb), np.int64))
            out["gt_match"].append(np.zeros(len(pb), np.int64))
            continue
        pb, gb = np.ascontiguousarray(pb[window]), np.ascontiguousarray(gb[window])
        out["fg_match"].append(_popcount(pb & _packed_dilate_disk(gb, bound_pix)))
        out["gt_match"].append(_popcount(gb & _packed_dilate_disk(pb, bound_pix)))
    return {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in out.items()}


def _bounding_window(m: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Smallest (frames, rows, words) window of packed maps (N,H,words) holding every set bit.

    Matches are only counted where a boundary bit is set, and the other boundary is zero
    outside this window, so dilating inside the window alone (zero outside) gives identical
    counts while skipping the empty parts of the frames.
    """
    rows = np.flatnonzero(m.any(axis=(0, 2)))
    if rows.size == 0:
        return None
    words = np.flatnonzero(m.any(axis=(0, 1)))
    return slice(None), slice(rows[0], rows[-1] + 1), slice(words[0], words[-1] + 1)


def _iou_from_counts(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """J per frame, 1 where the union is empty (DAVIS ``db_eval_iou``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        j = inter / union
    return np.where(union == 0, 1.0, j)


def _f_from_counts(c: Mapping[str, np.ndarray]) -> np.ndarray:
    """F per frame from boundary counts, with DAVIS ``f_measure``'s edge cases.

    Same float64 operations in the same order as DAVIS, hence bit-identical values.
    """
    n_fg, n_gt = c["n_fg"], c["n_gt"]
    both = (n_fg > 0) & (n_gt > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(both, c["fg_match"] / n_fg, np.where(n_fg == 0, 1.0, 0.0))
        recall = np.where(both, c["gt_match"] / n_gt, np.where(n_gt == 0, 1.0, 0.0))
        f = 2 * precision * recall / (precision + recall)
    return np.where(precision + recall == 0, 0.0, f)


def _prepare(
    annotation: Any, segmentation: Any, void_pixels: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validated (T,H,W) numpy triplet (any dtype, non-zero = foreground); void may be None."""
    gt, pred = _frames(annotation, "annotation"), _frames(segmentation, "segmentation")
    void = None if void_pixels is None else _frames(void_pixels, "void_pixels")
    if np.ndim(annotation) != np.ndim(segmentation):
        raise ValueError(f"rank mismatch: {np.ndim(annotation)} vs {np.ndim(segmentation)}")
    _check_same_shape(annotation=gt, segmentation=pred, void_pixels=void)
    return gt, pred, void


def _scalar_or_frames(values: np.ndarray, like: Any) -> float | np.ndarray:
    """DAVIS returns a number for (H,W) input and a per-frame array for (T,H,W)."""
    return float(values[0]) if np.ndim(like) == 2 else values


def db_eval_iou(annotation: Any, segmentation: Any, void_pixels: Any = None) -> float | np.ndarray:
    """DAVIS-2017 region similarity J = |P & G| / |P | G|, 1 for an empty union.

    (H,W) -> float; (T,H,W) -> float64 (T,) per-frame values.
    """
    gt, pred, void = _prepare(annotation, segmentation, void_pixels)
    c = _frame_counts(gt, pred, void, None)
    return _scalar_or_frames(_iou_from_counts(c["inter"], c["union"]), annotation)


def db_eval_boundary(
    annotation: Any, segmentation: Any, void_pixels: Any = None, bound_th: float = 0.008
) -> float | np.ndarray:
    """DAVIS-2017 boundary F-measure (precision over the segmentation's boundary).

    (H,W) -> float; (T,H,W) -> float64 (T,) per-frame values, all frames in one batched pass.
    """
    gt, pred, void = _prepare(annotation, segmentation, void_pixels)
    bound_pix = boundary_tolerance(gt.shape[1], gt.shape[2], bound_th)
    c = _frame_counts(gt, pred, void, bound_pix)
    return _scalar_or_frames(_f_from_counts(c), annotation)


def frame_jf(gt: Any, pred: Any, bound_th: float = 0.008) -> tuple[np.ndarray, np.ndarray]:
    """(J, F) of every frame: float64 (T,) each; gt, pred (T,H,W). One shared packing pass."""
    g, p, _ = _prepare(gt, pred, None)
    c = _frame_counts(g, p, None, boundary_tolerance(g.shape[1], g.shape[2], bound_th))
    return _iou_from_counts(c["inter"], c["union"]), _f_from_counts(c)


def video_jf(gt: Any, pred: Any, bound_th: float = 0.008) -> tuple[float, float]:
    """Referring-VOS per-expression score: (J, F) each averaged over all T frames, in [0, 1].

    gt, pred: (T,H,W).
    """
    j, f = frame_jf(gt, pred, bound_th)
    return float(np.mean(j)), float(np.mean(f))


def db_statistics(per_frame: Any) -> dict[str, float]:
    """DAVIS-2017 sequence statistics of one object's per-frame J or F values.

    Returns ``{"mean", "recall", "decay"}`` (DAVIS returns the tuple (M, O, D) in this order):
    mean = nanmean; recall = fraction of frames > 0.5 (NaN frames count as misses, as in DAVIS);
    decay = nanmean(first quarter bin) - nanmean(last quarter bin), bins from
    ``round(linspace(1, n, 5) + 1e-10) - 1`` with overlapping ends. DAVIS casts the bin indices
    to uint8 (wrong beyond 256 frames); int64 is used here, identical for n <= 256.
    """
    v = np.asarray(per_frame, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("db_statistics needs at least one frame")
    ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.int64)
    bins = [v[ids[i] : ids[i + 1] + 1] for i in range(4)]
    with warnings.catch_warnings():  # all-NaN bins give NaN, as in DAVIS
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(v)
        decay = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return {"mean": float(mean), "recall": float(np.mean(v > 0.5)), "decay": float(decay)}


# --------------------------------------------------------------------------------------------
# RES: cIoU / gIoU
# --------------------------------------------------------------------------------------------


@dataclass
class RESAccumulator:
    """Streaming cIoU/gIoU over a split, kept as plain sums so ranks can be added up.

    ``missing_*`` track sentences without a predicted mask so the lenient (Sa2VA-style,
    skip-missing) numbers can be derived; strict numbers count them as empty predictions.
    Use :meth:`to_array`/:meth:`from_array` with an all-reduce(sum), or :meth:`merge`.
    """

    inter: float = 0.0  # sum |P & G|
    union: float = 0.0  # sum |P | G|  (missing prediction: |G|)
    iou_sum: float = 0.0  # sum of per-sentence IoU (empty union: 1.0)
    count: float = 0.0  # sentences
    missing_union: float = 0.0  # sum |G| over sentences without a mask
    missing_iou_sum: float = 0.0  # their IoU (0, or 1 when the GT is empty too)
    missing_count: float = 0.0

    def add(self, pred: Any | None, gt: Any) -> None:
        """Account one sentence; ``pred=None`` means the model produced no mask."""
        g = _as_bool(gt)
        if pred is None:
            inter, union = 0, int(np.count_nonzero(g))
        else:
            p = _as_bool(pred)
            _check_same_shape(pred=p, gt=g)
            inter, union = int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g))
        iou = 1.0 if union == 0 else inter / union
        self.inter += inter
        self.union += union
        self.iou_sum += iou
        self.count += 1
        if pred is None:
            self.missing_union += union
            self.missing_iou_sum += iou
            self.missing_count += 1

    def merge(self, other: "RESAccumulator") -> "RESAccumulator":
        """Add another accumulator's sums into this one (e.g. from another rank); returns self."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def to_array(self) -> np.ndarray:
        """float64 (7,) state vector, for summing across ranks."""
        return np.array([getattr(self, f.name) for f in fields(self)], dtype=np.float64)

    @classmethod
    def from_array(cls, values: Any) -> "RESAccumulator":
        """Inverse of :meth:`to_array` (accepts a summed numpy array or tensor)."""
        if hasattr(values, "detach"):
            values = values.detach().cpu().numpy()
        v = np.asarray(values, dtype=np.float64).ravel()
        names = [f.name for f in fields(cls)]
        if v.size != len(names):
            raise ValueError(f"expected {len(names)} values, got {v.size}")
        return cls(**{n: float(x) for n, x in zip(names, v)})

    def compute(self, lenient: bool = False) -> dict[str, float]:
        """{"cIoU", "gIoU"} in [0, 1] (strict); with ``lenient`` also the skip-missing variants.

        A split whose total union is empty (every GT and prediction empty) has cIoU 1.0,
        consistent with the empty-union convention of gIoU.
        """
        if self.count == 0:
            raise ValueError("no sentences accumulated")
        out = {
            "cIoU": 1.0 if self.union == 0 else self.inter / self.union,
            "gIoU": self.iou_sum / self.count,
        }
        if lenient:
            union = self.union - self.missing_union
            count = self.count - self.missing_count
            lenient_iou = self.iou_sum - self.missing_iou_sum
            out["cIoU_lenient"] = float("nan") if count == 0 else (1.0 if union == 0 else self.inter / union)
            out["gIoU_lenient"] = float("nan") if count == 0 else lenient_iou / count
            out["n_missing"] = int(self.missing_count)
        return out


def res_metrics(pairs: Iterable[tuple[Any | None, Any]], lenient: bool = False) -> dict[str, float]:
    """cIoU / gIoU of ``(pred or None, gt)`` pairs; see :class:`RESAccumulator`.

    With ``lenient=True`` also ``cIoU_lenient``/``gIoU_lenient`` (Sa2VA's evaluator: sentences
    without a mask skipped, which inflates the score) and ``n_missing``.
    """
    acc = RESAccumulator()
    for pred, gt in pairs:
        acc.add(pred, gt)
    return acc.compute(lenient=lenient)


# --------------------------------------------------------------------------------------------
# ReVOS A / R and referring-VOS aggregation
# --------------------------------------------------------------------------------------------


def _revos_inputs(
    gt: Any, pred: Any, foreground: Any | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Packed (T,H,words) gt, pred, foreground (defaults to gt) and the pixels per frame H*W."""
    g, p, _ = _prepare(gt, pred, None)
    pg = _pack_rows(g)
    if foreground is None:
        return pg, _pack_rows(p), pg, g.shape[1] * g.shape[2]
    f = _frames(foreground, "foreground")
    _check_same_shape(gt=g, foreground=f)
    return pg, _pack_rows(p), _pack_rows(f), g.shape[1] * g.shape[2]


def revos_accuracy(gt: Any, pred: Any) -> float:
    """ReVOS A: mean over frames of (TP + TN) / (H*W), i.e. the fraction of correct pixels."""
    g, p, _, n_pixels = _revos_inputs(gt, pred, None)
    return _packed_accuracy(g, p, n_pixels)


def _packed_accuracy(g: np.ndarray, p: np.ndarray, n_pixels: int) -> float:
    # (pixels - wrong) / pixels: the same float64 value as numpy's mean(gt == pred) per frame
    return float(np.mean((n_pixels - _popcount(g ^ p)) / n_pixels))


def revos_robustness(gt: Any, pred: Any, foreground: Any | None = None, pooled: bool = False) -> float:
    """ReVOS R = max(1 - sum((1-G)*P) / (sum(foreground) + 1e-6), 0).

    ``foreground``: the video's ``mask_dict_foreground`` masks (T,H,W); defaults to ``gt``.
    Default (``pooled=False``) is the published ReVOS/VISA evaluator: R per frame (sums over the
    frame's pixels), clipped at 0, then averaged over frames. ``pooled=True`` takes both sums over
    all frames of the expression before the ratio (not the published protocol).
    """
    g, p, f, _ = _revos_inputs(gt, pred, foreground)
    return _packed_robustness(g, p, f, pooled)


def _packed_robustness(g: np.ndarray, p: np.ndarray, f: np.ndarray, pooled: bool = False) -> float:
    false_pos, fg = _popcount(p & ~g), _popcount(f)  # (T,), (T,)
    if pooled:
        return float(max(1.0 - false_pos.sum() / (fg.sum() + 1e-6), 0.0))
    return float(np.mean(np.maximum(1.0 - false_pos / (fg + 1e-6), 0.0)))


def revos_accuracy_and_robustness(gt: Any, pred: Any, foreground: Any | None = None) -> tuple[float, float]:
    """(A, R) of one expression with the published ReVOS protocol, both in [0, 1] (one packing pass)."""
    g, p, f, n_pixels = _revos_inputs(gt, pred, foreground)
    return _packed_accuracy(g, p, n_pixels), _packed_robustness(g, p, f)


def frame_accuracy_and_robustness(gt: Any, pred: Any, foreground: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ReVOS A and (published, per-frame) R of every frame: float64 (T,) each, before the mean
    over frames that :func:`revos_accuracy_and_robustness` takes."""
    g, p, f, n_pixels = _revos_inputs(gt, pred, foreground)
    accuracy = (n_pixels - _popcount(g ^ p)) / n_pixels
    robustness = np.maximum(1.0 - _popcount(p & ~g) / (_popcount(f) + 1e-6), 0.0)
    return accuracy, robustness


class ExpressionScores:
    """J, F (and ReVOS A, R) of one expression, fed one frame at a time in any order.

    Video evaluation streams the masks (frames are tracked forwards, then backwards), so no
    (T, H, W) array of the whole video is ever held: each frame's values are computed when its
    mask arrives and stored at its index. :meth:`result` then takes the same float64 means, over
    the same per-frame values in frame order, as :func:`video_jf` and
    :func:`revos_accuracy_and_robustness` on the whole video: the numbers are identical.

    Args:
        n_frames: frames of the video (each must be added once).
        accuracy: also A (ReVOS, Ref-SAV).
        robustness: also R (ReVOS; each frame then needs the video's foreground, or GT stands in).
    """

    def __init__(self, n_frames: int, *, accuracy: bool = False, robustness: bool = False) -> None:
        self.metrics = ["J", "F"] + (["A"] if accuracy or robustness else []) + (["R"] if robustness else [])
        self.values = {m: np.full(n_frames, np.nan) for m in self.metrics}
        self.seen = np.zeros(n_frames, dtype=bool)

    def add(self, t: int, gt: Any, pred: Any | None, foreground: Any | None = None) -> None:
        """Frame ``t``: gt and pred (H, W), any non-zero value is foreground; ``pred=None`` is an
        empty prediction."""
        if self.seen[t]:
            raise ValueError(f"frame {t} scored twice")
        gt = _frames(gt, "gt")
        pred = np.zeros(gt.shape, dtype=bool) if pred is None else _frames(pred, "pred")
        self.values["J"][t], self.values["F"][t] = (v[0] for v in frame_jf(gt, pred))
        if "A" in self.values:
            a, r = frame_accuracy_and_robustness(gt, pred, None if foreground is None else _frames(foreground, "fg"))
            self.values["A"][t] = a[0]
            if "R" in self.values:
                self.values["R"][t] = r[0]
        self.seen[t] = True

    def result(self) -> dict[str, float]:
        """{metric: mean over frames} in [0, 1]; every frame must have been added."""
        if not self.seen.all():
            raise ValueError(f"frames {np.flatnonzero(~self.seen)[:10].tolist()} were never scored")
        return {m: float(np.mean(v)) for m, v in self.values.items()}


def _mean_x100(values: list[float]) -> float:
    """Percent mean; NaN for an empty group (e.g. a subset with no reasoning expressions)."""
    return float(100.0 * np.mean(values)) if values else float("nan")


REVOS_TYPES = {0: "referring", 1: "reasoning", 2: "not scored"}
REFSAV_TYPES = {0: "long", 1: "short"}
# Protocols that report by expression type (``type_id`` of each expression): (name, types).
EXPRESSION_TYPES = {"revos": ("ReVOS", REVOS_TYPES), "refsav": ("Ref-SAV", REFSAV_TYPES)}


def type_id_problem(type_id: Any, protocol: str) -> str | None:
    """None if ``type_id`` is one of ``protocol``'s expression types, else what is wrong with it."""
    name, types = EXPRESSION_TYPES[protocol]
    if isinstance(type_id, int) and not isinstance(type_id, bool) and type_id in types:
        return None
    known = [f"{t} ({label})" for t, label in types.items()]
    return f"{name} type_id {type_id!r} is not {', '.join(known[:-1])} or {known[-1]}"


def _checked_type(rec: Mapping[str, Any], protocol: str) -> int:
    problem = type_id_problem(rec.get("type_id"), protocol)
    if problem:
        raise ValueError(f"expression {rec.get('exp_id')} ({rec.get('exp')!r}): {problem}")
    return int(rec["type_id"])


def aggregate_revos(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """ReVOS table from per-expression ``{"type_id", "J", "F", "A", "R"}`` (values in [0, 1]).

    Returns {"referring", "reasoning", "overall"} -> {"J", "F", "J&F", "A", "R", "n"}, metrics
    x100. Per type: means over that type's expressions, J&F = (J + F) / 2. overall = (referring +
    reasoning) / 2 per metric; type 2 expressions are counted nowhere. An absent type gives NaN.
    (The published script rounds each expression to 0.01 before averaging; not replicated.)
    """
    groups: dict[int, dict[str, list[float]]] = {t: {m: [] for m in "JFAR"} for t in (0, 1)}
    for rec in records:
        type_id = _checked_type(rec, "revos")
        if type_id == 2:
            continue
        for m in "JFAR":
            groups[type_id][m].append(float(rec[m]))
    out: dict[str, dict[str, float]] = {}
    for name, type_id in (("referring", 0), ("reasoning", 1)):
        g = groups[type_id]
        res = {m: _mean_x100(g[m]) for m in "JFAR"}
        res["J&F"] = (res["J"] + res["F"]) / 2
        res["n"] = len(g["J"])
        out[name] = {k: res[k] for k in ("J", "F", "J&F", "A", "R", "n")}
    out["overall"] = {
        k: (out["referring"][k] + out["reasoning"][k]) / 2 for k in ("J", "F", "J&F", "A", "R")
    }
    out["overall"]["n"] = out["referring"]["n"] + out["reasoning"]["n"]
    return out


def aggregate_refvos(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Referring-VOS split score from per-expression ``{"J", "F"}`` in [0, 1].

    Returns {"J", "F", "J&F"} x100 (means over expressions; J&F = (J + F) / 2) and "n".
    """
    js, fs = [], []
    for rec in records:
        js.append(float(rec["J"]))
        fs.append(float(rec["F"]))
    if not js:
        raise ValueError("no expressions to aggregate")
    j, f = _mean_x100(js), _mean_x100(fs)
    return {"J": j, "F": f, "J&F": (j + f) / 2, "n": len(js)}


def aggregate_refsav(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Ref-SAV table from per-expression ``{"type_id", "J", "F", "A"}`` (values in [0, 1]).

    Returns {"long", "short", "overall"} -> {"J", "F", "J&F", "A", "n"}, metrics x100: per type the
    means over its expressions (``type_id`` 0 = long, 1 = short), J&F = (J + F) / 2; overall = the
    mean of the two types per metric, as Sa2VA's ``eval_ref_sav.py``. An absent type gives NaN.
    """
    groups: dict[int, dict[str, list[float]]] = {t: {m: [] for m in "JFA"} for t in REFSAV_TYPES}
    for rec in records:
        type_id = _checked_type(rec, "refsav")
        for m in "JFA":
            groups[type_id][m].append(float(rec[m]))
    out: dict[str, dict[str, float]] = {}
    for type_id, name in REFSAV_TYPES.items():
        res: dict[str, float] = {m: _mean_x100(groups[type_id][m]) for m in "JFA"}
        res["J&F"] = (res["J"] + res["F"]) / 2
        res["n"] = len(groups[type_id]["J"])
        out[name] = res
    out["overall"] = {k: (out["long"][k] + out["short"][k]) / 2 for k in ("J", "F", "J&F", "A")}
    out["overall"]["n"] = out["long"]["n"] + out["short"]["n"]
    return out
