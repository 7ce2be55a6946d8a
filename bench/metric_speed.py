"""J&F speed: the batched, bit-packed DAVIS metrics vs a plain per-frame implementation.

Video: 3 objects x 100 frames at DAVIS size 480x854 (tolerance 8 px, disk of 197 pixels).
Ground truth: moving ellipses of different sizes; predictions: the same ellipses slightly
offset and rescaled with a wobbling contour, random false-positive blobs anywhere in the frame
(``--stray-prob`` of the frames) and a few empty frames. Fixed seed.

Compared, interleaved in one process (A B C A B C ...):
  A  ``video_jf`` per object (what the referring-VOS evaluators call per expression);
  B  ``db_eval_iou`` + ``db_eval_boundary`` per object (per-frame arrays, DAVIS API);
  C  a straightforward per-frame implementation of the same definitions (DAVIS ``f_measure`` /
     ``_seg2bmap`` / ``db_eval_iou``; the cv2.dilate(disk) of DAVIS replaced by OR-ing shifted
     copies over the 197 disk offsets, the fair numpy stand-in without cv2/skimage):
     ``projects/salma/evaluation/davis_reference.py``, which the tests also hold the metrics to.
Prints median times, speed-ups (of the medians and per repetition), and checks that every per-frame J and F is identical.

    python bench/metric_speed.py                      # 3 reps, 1 torch thread
    python bench/metric_speed.py --reps 5 --stray-prob 0
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from projects.salma.evaluation.davis_reference import f_measure as ref_f
from projects.salma.evaluation.davis_reference import region_iou as ref_j
from projects.salma.evaluation.metrics import db_eval_boundary, db_eval_iou, video_jf

def draw_ellipse(out: np.ndarray, cy: float, cx: float, ry: float, rx: float,
                 wobble: float = 0.0, phase: float = 0.0) -> None:
    """Set an ellipse (contour radius modulated by 1 + wobble*sin(5θ + phase)) in out (H,W)."""
    h, w = out.shape
    reach = 1 + abs(wobble)
    y0, y1 = max(0, int(cy - ry * reach) - 1), min(h, int(cy + ry * reach) + 2)
    x0, x1 = max(0, int(cx - rx * reach) - 1), min(w, int(cx + rx * reach) + 2)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    dy, dx = (yy - cy) / ry, (xx - cx) / rx
    rho = 1 + wobble * np.sin(5 * np.arctan2(dy, dx) + phase)
    out[y0:y1, x0:x1] |= (dy * dy + dx * dx <= rho * rho).astype(out.dtype)


def make_video(n_objects: int, n_frames: int, h: int, w: int, stray_prob: float,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (O,T,H,W) ground truth and prediction masks (values 0/1)."""
    rng = np.random.default_rng(seed)
    gts = np.zeros((n_objects, n_frames, h, w), np.uint8)
    preds = np.zeros_like(gts)
    for o in range(n_objects):
        ry, rx = rng.uniform(30, 110), rng.uniform(40, 160)
        cy, cx = rng.uniform(0.2 * h, 0.8 * h), rng.uniform(0.2 * w, 0.8 * w)
        vy, vx = rng.uniform(-2, 2), rng.uniform(-4, 4)
        for t in range(n_frames):
            y, x = cy + vy * t, cx + vx * t
            draw_ellipse(gts[o, t], y, x, ry, rx)
            if rng.random() < 0.03:  # object lost: empty prediction
                continue
            draw_ellipse(preds[o, t], y + rng.normal(0, 3), x + rng.normal(0, 3),
                         ry * rng.uniform(0.93, 1.07), rx * rng.uniform(0.93, 1.07),
                         wobble=rng.uniform(0, 0.08), phase=rng.uniform(0, 2 * np.pi))
            if rng.random() < stray_prob:  # false-positive blobs anywhere in the frame
                for _ in range(rng.integers(1, 4)):
                    draw_ellipse(preds[o, t], rng.uniform(0, h), rng.uniform(0, w),
                                 rng.uniform(2, 12), rng.uniform(2, 12))
    return gts, preds


# ------------------------------------------------------------------ timed variants


def run_video_jf(gts: np.ndarray, preds: np.ndarray) -> list[tuple[float, float]]:
    return [video_jf(g, p) for g, p in zip(gts, preds)]


def run_batched_frames(gts: np.ndarray, preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    j = np.stack([db_eval_iou(g, p) for g, p in zip(gts, preds)])
    f = np.stack([db_eval_boundary(g, p) for g, p in zip(gts, preds)])
    return j, f  # (O,T) each


def run_reference(gts: np.ndarray, preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    j = np.array([[ref_j(p, g) for g, p in zip(go, po)] for go, po in zip(gts, preds)])
    f = np.array([[ref_f(p, g) for g, p in zip(go, po)] for go, po in zip(gts, preds)])
    return j, f


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads (the metrics themselves are single-threaded numpy)")
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--stray-prob", type=float, default=0.3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    gts, preds = make_video(args.objects, args.frames, args.height, args.width, args.stray_prob)
    print(f"video: {args.objects} objects x {args.frames} frames x {args.height}x{args.width}, "
          f"stray-blob prob {args.stray_prob}, reps {args.reps}, torch threads {args.threads}")
    run_video_jf(gts[:, :2], preds[:, :2])  # warm-up (first-touch allocations)

    times = {"A": [], "B": [], "C": []}
    for _ in range(args.reps):  # interleaved: A B C A B C ...
        t, jf_a = timed(run_video_jf, gts, preds)
        times["A"].append(t)
        t, (j_b, f_b) = timed(run_batched_frames, gts, preds)
        times["B"].append(t)
        t, (j_c, f_c) = timed(run_reference, gts, preds)
        times["C"].append(t)

    med = {k: statistics.median(v) for k, v in times.items()}
    names = {"A": "video_jf (batched, bit-packed)", "B": "db_eval_iou + db_eval_boundary",
             "C": "per-frame reference"}
    for k in "ABC":
        runs = ", ".join(f"{t:.3f}" for t in times[k])
        print(f"{k} {names[k]:<32}: median {med[k]:8.3f} s   (runs: {runs})")
    # ratios pair by pair (same repetition) hold up better when the machine's speed drifts
    pair_a = statistics.median(c / a for c, a in zip(times["C"], times["A"]))
    pair_b = statistics.median(c / b for c, b in zip(times["C"], times["B"]))
    print(f"speed-up C/A: {med['C'] / med['A']:.1f}x of medians, {pair_a:.1f}x median per rep;  "
          f"C/B: {med['C'] / med['B']:.1f}x of medians, {pair_b:.1f}x median per rep")

    j_diff, f_diff = np.abs(j_b - j_c).max(), np.abs(f_b - f_c).max()
    jf_a = np.array(jf_a)  # (O,2)
    mean_diff = max(np.abs(jf_a[:, 0] - j_c.mean(1)).max(), np.abs(jf_a[:, 1] - f_c.mean(1)).max())
    identical = np.array_equal(j_b, j_c) and np.array_equal(f_b, f_c)
    print(f"per-frame max |J diff| = {j_diff:.3g}, max |F diff| = {f_diff:.3g}, identical: {identical}; "
          f"video_jf vs reference frame means: max diff {mean_diff:.3g}")
    print(f"J&F (x100, mean over objects) = {100 * jf_a.mean():.2f}  "
          f"(J {100 * jf_a[:, 0].mean():.2f}, F {100 * jf_a[:, 1].mean():.2f})")
    assert identical, "batched metrics differ from the per-frame reference"


if __name__ == "__main__":
    main()
