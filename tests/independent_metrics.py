"""The benchmarks' scores written from their definitions (docs/metrics.md), independently
of ``projects.salma.evaluation``: plain numpy, one frame at a time, with OpenCV's ``dilate`` and a
disk kernel as the DAVIS-2017 evaluation code does. The end-to-end evaluation tests recompute the
saved numbers with these from the per-item masks; ``tests/test_independent_metrics.py`` holds them
to hand-computed cases.
"""
from __future__ import annotations

import math

import cv2
import numpy as np


# ------------------------------------------------------------------ one frame
def frame_j(pred: np.ndarray, gt: np.ndarray) -> float:
    """|P and G| / |P or G|; 1 when both are empty."""
    p, g = pred.astype(bool), gt.astype(bool)
    union = int(np.sum(p | g))
    return 1.0 if union == 0 else int(np.sum(p & g)) / union


def boundary(mask: np.ndarray) -> np.ndarray:
    """DAVIS boundary map: a pixel that differs from its east, south or south-east neighbour; the
    last row compares east only, the last column south only, the bottom-right pixel is never one."""
    m = mask.astype(bool)
    east, south, south_east = (np.zeros_like(m) for _ in range(3))  # False where the neighbour is outside
    east[:, :-1] = m[:, :-1] != m[:, 1:]
    south[:-1, :] = m[:-1, :] != m[1:, :]
    south_east[:-1, :-1] = m[:-1, :-1] != m[1:, 1:]
    return east | south | south_east


def tolerance(height: int, width: int) -> int:
    """bound_pix = ceil(0.008 * sqrt(H^2 + W^2))."""
    return math.ceil(0.008 * math.sqrt(height * height + width * width))


def disk(radius: int) -> np.ndarray:
    """skimage.morphology.disk: the offsets with dx^2 + dy^2 <= r^2."""
    d = np.arange(-radius, radius + 1)
    return (d[:, None] ** 2 + d[None, :] ** 2 <= radius * radius).astype(np.uint8)


def frame_f(pred: np.ndarray, gt: np.ndarray) -> float:
    """DAVIS-2017 boundary F-measure of one frame."""
    pb, gb = boundary(pred), boundary(gt)
    kernel = disk(tolerance(*gt.shape))
    pb_dil = cv2.dilate(pb.astype(np.uint8), kernel).astype(bool)
    gb_dil = cv2.dilate(gb.astype(np.uint8), kernel).astype(bool)
    n_p, n_g = int(pb.sum()), int(gb.sum())
    if n_p == 0 and n_g > 0:
        precision, recall = 1.0, 0.0
    elif n_p > 0 and n_g == 0:
        precision, recall = 0.0, 1.0
    elif n_p == 0 and n_g == 0:
        return 1.0
    else:
        precision = int(np.sum(pb & gb_dil)) / n_p
        recall = int(np.sum(gb & pb_dil)) / n_g
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


# ------------------------------------------------------------------ one expression / sentence
def expression_jf(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(J, F) of one expression: each the mean over all its (T, H, W) frames."""
    js = [frame_j(p, g) for p, g in zip(pred, gt, strict=True)]
    fs = [frame_f(p, g) for p, g in zip(pred, gt, strict=True)]
    return sum(js) / len(js), sum(fs) / len(fs)


def revos_a_r(gt: np.ndarray, pred: np.ndarray, foreground: np.ndarray) -> tuple[float, float]:
    """ReVOS (A, R) of one expression: per frame, A = fraction of correct pixels and
    R = max(1 - sum((1 - G) * P) / (sum(foreground) + 1e-6), 0); each averaged over frames."""
    a, r = [], []
    for g, p, f in zip(gt.astype(bool), pred.astype(bool), foreground.astype(bool), strict=True):
        a.append(int(np.sum(g == p)) / g.size)
        r.append(max(1.0 - int(np.sum(~g & p)) / (int(f.sum()) + 1e-6), 0.0))
    return sum(a) / len(a), sum(r) / len(r)


# ------------------------------------------------------------------ a split
def res_split(pairs: list[tuple[np.ndarray | None, np.ndarray]]) -> dict[str, float]:
    """RES over a split of (pred or None, gt) sentences, in percent. Strict: a sentence without a
    mask is an empty prediction (its GT area enters the union). Lenient (Sa2VA's evaluator): such
    sentences are left out."""
    def scores(kept):
        inter = sum(int(np.sum(p.astype(bool) & g.astype(bool))) for p, g in kept)
        union = sum(int(np.sum(p.astype(bool) | g.astype(bool))) for p, g in kept)
        ious = [frame_j(p, g) for p, g in kept]
        return 100.0 * (1.0 if union == 0 else inter / union), 100.0 * sum(ious) / len(ious)

    strict = [(np.zeros_like(g) if p is None else p, g) for p, g in pairs]
    c_iou, g_iou = scores(strict)
    c_len, g_len = scores([(p, g) for p, g in pairs if p is not None])
    return {"cIoU": c_iou, "gIoU": g_iou, "cIoU_lenient": c_len, "gIoU_lenient": g_len}


def refvos_split(per_expression: list[tuple[float, float]]) -> dict[str, float]:
    """Referring-VOS split from per-expression (J, F): means over expressions x100, J&F = (J+F)/2."""
    j = 100.0 * sum(x[0] for x in per_expression) / len(per_expression)
    f = 100.0 * sum(x[1] for x in per_expression) / len(per_expression)
    return {"J": j, "F": f, "J&F": (j + f) / 2}


def revos_split(per_expression: list[dict]) -> dict[str, dict[str, float]]:
    """ReVOS table from per-expression {type_id, J, F, A, R}: per type (0 referring, 1 reasoning)
    the means x100 and J&F; overall = (referring + reasoning) / 2; type 2 counts nowhere."""
    out = {}
    for name, type_id in (("referring", 0), ("reasoning", 1)):
        rows = [e for e in per_expression if e["type_id"] == type_id]
        out[name] = {m: 100.0 * sum(e[m] for e in rows) / len(rows) for m in "JFAR"}
        out[name]["J&F"] = (out[name]["J"] + out[name]["F"]) / 2
    out["overall"] = {k: (out["referring"][k] + out["reasoning"][k]) / 2 for k in ("J", "F", "J&F", "A", "R")}
    return out
