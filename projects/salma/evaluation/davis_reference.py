"""The DAVIS-2017 J and F written out frame by frame, as the benchmark's own code does.

Not used to score anything: ``metrics.py`` computes the same numbers vectorised over frames, and
the tests and ``bench/metric_speed.py`` hold it to this plain version (identical values, and the
speed-up). ``cv2.dilate`` with a disk is replaced by OR-ing copies of the map shifted by every
disk offset (zero border), which is the same operation.
"""
from __future__ import annotations

import numpy as np


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """DAVIS ``_seg2bmap`` for a same-size map: a pixel differing from its E, S or SE neighbour."""
    seg = seg.astype(bool)
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def dilate(b: np.ndarray, r: int) -> np.ndarray:
    """Dilation by skimage's ``disk(r)`` with a zero border."""
    h, w = b.shape
    out = np.zeros_like(b)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dx * dx + dy * dy > r * r or abs(dx) >= w or abs(dy) >= h:
                continue
            out[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] |= \
                b[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
    return out


def f_measure(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = 0.008) -> float:
    """DAVIS ``f_measure`` of one frame; ``bound_th`` >= 1 is a radius in pixels."""
    keep = np.ones(pred.shape, bool) if void is None else ~void.astype(bool)
    r = int(bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(pred.shape)))
    pb, gb = seg2bmap(pred.astype(bool) & keep), seg2bmap(gt.astype(bool) & keep)
    n_fg, n_gt = pb.sum(), gb.sum()
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision = np.sum(pb & dilate(gb, r)) / float(n_fg)
        recall = np.sum(gb & dilate(pb, r)) / float(n_gt)
    return 0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def region_iou(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """DAVIS ``db_eval_iou`` of one frame (an empty union scores 1)."""
    keep = np.ones(pred.shape, bool) if void is None else ~void.astype(bool)
    p, g = pred.astype(bool), gt.astype(bool)
    inter, union = np.sum(p & g & keep), np.sum((p | g) & keep)
    return 1.0 if union == 0 else inter / union
