"""Metrics against hand-computed values and a plain per-frame DAVIS-2017 reference."""

import numpy as np
import pytest
import torch

from projects.salma.evaluation import davis_reference as R
from projects.salma.evaluation import metrics as M
from projects.salma.evaluation.metrics import (
    ExpressionScores,
    RESAccumulator,
    aggregate_refvos,
    aggregate_revos,
    boundary_map,
    boundary_tolerance,
    db_eval_boundary,
    db_eval_iou,
    db_statistics,
    dilate_disk,
    disk,
    res_metrics,
    revos_accuracy,
    revos_accuracy_and_robustness,
    revos_robustness,
    video_jf,
)

# The straightforward per-frame reference (DAVIS-2017's own formulation).
ref_seg2bmap, ref_dilate, ref_f, ref_j = R.seg2bmap, R.dilate, R.f_measure, R.region_iou


def random_masks(rng, t, h, w):
    """Blobs + speckle + special frames (empty, full, one corner pixel)."""
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((t, h, w), np.uint8)
    for i in range(t):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(1, h / 2), rng.uniform(1, w / 2)
        out[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        out[i] ^= rng.random((h, w)) < 0.02
    out[0] = 0
    out[1] = 1
    out[2] = 0
    out[2, -1, -1] = 255
    return out


# ---------------------------------------------------------------------------------------------
# J
# ---------------------------------------------------------------------------------------------


def test_j_hand_cases():
    # overlap: inter {(0,1)} = 1, union {(0,0),(0,1),(0,2)} = 3 -> 1/3
    a = np.array([[1, 1, 0], [0, 0, 0]])
    b = np.array([[0, 1, 1], [0, 0, 0]])
    assert db_eval_iou(a, b) == pytest.approx(1 / 3)
    assert db_eval_iou(np.array([[1, 0]]), np.array([[0, 1]])) == 0.0  # disjoint
    assert db_eval_iou(np.zeros((2, 3)), np.zeros((2, 3))) == 1.0  # empty union -> 1
    assert db_eval_iou(np.zeros((2, 3)), a) == 0.0  # GT empty, prediction not
    assert db_eval_iou(a, np.zeros((2, 3))) == 0.0  # prediction empty, GT not
    # (T,H,W) gives the per-frame array; 255 and bool count as foreground
    video_gt = np.stack([a, np.array([[1, 0, 0], [0, 0, 0]]), np.zeros((2, 3), int)]) * 255
    video_pred = np.stack([b, np.array([[0, 0, 1], [0, 0, 0]]), np.zeros((2, 3), int)]).astype(bool)
    j = db_eval_iou(video_gt, video_pred)
    assert isinstance(j, np.ndarray) and j.shape == (3,)
    np.testing.assert_allclose(j, [1 / 3, 0.0, 1.0])
    # void pixels leave both sets: without void inter 1 / union 2; (0,1) void -> 1 / 1
    assert db_eval_iou(np.array([[1, 1]]), np.array([[1, 0]])) == 0.5
    assert db_eval_iou(np.array([[1, 1]]), np.array([[1, 0]]), void_pixels=np.array([[0, 1]])) == 1.0
    # torch tensors are accepted
    assert db_eval_iou(torch.tensor(a), torch.tensor(b)) == pytest.approx(1 / 3)


def test_shape_errors():
    with pytest.raises(ValueError):
        db_eval_iou(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError):
        db_eval_boundary(np.zeros((1, 2, 3)), np.zeros((2, 3)))  # rank mismatch
    with pytest.raises(ValueError):
        db_eval_boundary(np.zeros((1, 1, 2, 3)), np.zeros((1, 1, 2, 3)))


# ---------------------------------------------------------------------------------------------
# boundary map, disk, tolerance
# ---------------------------------------------------------------------------------------------


def test_boundary_map_hand_drawn():
    # b = m^east | m^south | m^south-east; last row east only, last column south only, corner 0.
    # The 2x2 square's boundary is offset half a pixel towards the origin (DAVIS _seg2bmap):
    # (0,0) differs from its SE neighbour, (1,0) from its E neighbour, (1,2) is 1 with E = 0 ...
    m = np.array([[0, 0, 0, 0, 0],
                  [0, 1, 1, 0, 0],
                  [0, 1, 1, 0, 0],
                  [0, 0, 0, 0, 0]])
    expected = np.array([[1, 1, 1, 0, 0],
                         [1, 0, 1, 0, 0],
                         [1, 1, 1, 0, 0],
                         [0, 0, 0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(boundary_map(m), expected)
    # bottom-right pixel: (1,1) via SE, (1,2) last column compares S (0^1), (2,1) last row
    # compares E (0^1), and the pixel itself is the corner -> 0
    m = np.zeros((3, 3), int)
    m[2, 2] = 1
    np.testing.assert_array_equal(boundary_map(m), np.array([[0, 0, 0], [0, 1, 1], [0, 1, 0]], bool))
    # a full frame has no boundary at all (no comparison against the outside)
    assert not boundary_map(np.ones((5, 7))).any()
    # odd size 7x5, last column filled: column 3 differs from its E neighbour on every row
    # (last row too), column 4 compares S only (1^1 = 0)
    m = np.zeros((7, 5), int)
    m[:, 4] = 1
    expected = np.zeros((7, 5), bool)
    expected[:, 3] = True
    np.testing.assert_array_equal(boundary_map(m), expected)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (7, 5), (5, 7), (3, 64), (4, 131), (33, 200)])
def test_boundary_map_matches_reference(shape):
    rng = np.random.default_rng(sum(shape))
    masks = rng.random((4,) + shape) < np.array([0.05, 0.5, 0.95, 1.0])[:, None, None]
    got = boundary_map(masks)
    for i in range(len(masks)):
        np.testing.assert_array_equal(got[i], ref_seg2bmap(masks[i]))


def test_disk_shapes():
    np.testing.assert_array_equal(disk(0), [[1]])
    np.testing.assert_array_equal(disk(1), [[0, 1, 0],
                                            [1, 1, 1],
                                            [0, 1, 0]])
    np.testing.assert_array_equal(disk(2), [[0, 0, 1, 0, 0],
                                            [0, 1, 1, 1, 0],
                                            [1, 1, 1, 1, 1],
                                            [0, 1, 1, 1, 0],
                                            [0, 0, 1, 0, 0]])
    # skimage.morphology.disk(3): rows |y|=3 -> |x|<=0, |y|=2 -> x^2<=5 -> |x|<=2, |y|=1 -> |x|<=2
    np.testing.assert_array_equal(disk(3), [[0, 0, 0, 1, 0, 0, 0],
                                            [0, 1, 1, 1, 1, 1, 0],
                                            [0, 1, 1, 1, 1, 1, 0],
                                            [1, 1, 1, 1, 1, 1, 1],
                                            [0, 1, 1, 1, 1, 1, 0],
                                            [0, 1, 1, 1, 1, 1, 0],
                                            [0, 0, 0, 1, 0, 0, 0]])
    assert disk(8).sum() == 197
    with pytest.raises(ValueError):
        disk(1.5)


def test_tolerance_formula():
    # sqrt(480^2 + 854^2) = sqrt(959716) = 979.65; * 0.008 = 7.84 -> ceil = 8
    assert boundary_tolerance(480, 854) == 8
    # sqrt(8^2 + 8^2) * 0.008 = 0.09 -> 1; sqrt(1080^2 + 1920^2) * 0.008 = 17.6 -> 18
    assert boundary_tolerance(8, 8) == 1
    assert boundary_tolerance(1080, 1920) == 18
    assert boundary_tolerance(480, 854, bound_th=3) == 3  # >= 1: pixels, as DAVIS
    with pytest.raises(ValueError):
        boundary_tolerance(480, 854, bound_th=2.5)


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 8, 63, 64, 65, 130])
def test_dilation_matches_reference(radius):
    rng = np.random.default_rng(radius)
    masks = rng.random((3, 23, 150)) < np.array([0.002, 0.02, 0.3])[:, None, None]
    got = dilate_disk(masks, radius)
    for i in range(3):
        np.testing.assert_array_equal(got[i], ref_dilate(masks[i], radius))


# ---------------------------------------------------------------------------------------------
# F
# ---------------------------------------------------------------------------------------------


def square(h, w, top, left, size):
    m = np.zeros((h, w), np.uint8)
    m[top:top + size, left:left + size] = 1
    return m


def test_f_edge_cases():
    full, empty, sq = np.ones((20, 30)), np.zeros((20, 30)), square(20, 30, 5, 5, 6)
    assert db_eval_boundary(full, full) == 1.0  # neither has a boundary
    assert db_eval_boundary(empty, empty) == 1.0
    # prediction full-frame: no predicted boundary, GT has one -> P=1, R=0 -> F=0
    assert db_eval_boundary(sq, full) == 0.0
    # reverse: predicted boundary, none in GT -> P=0, R=1 -> F=0
    assert db_eval_boundary(full, sq) == 0.0
    assert db_eval_boundary(sq, sq) == 1.0
    assert db_eval_boundary(sq, empty) == 0.0


def test_f_hand_computed_partial_match():
    # 8x8 frame: tolerance ceil(0.008 * sqrt(128)) = 1, disk(1) is the 4-neighbourhood.
    # GT 2x2 square at rows/cols 2..3 -> boundary = 3x3 ring rows 1..3, cols 1..3 (8 pixels).
    # Prediction shifted right by 2 -> ring rows 1..3, cols 3..5 (8 pixels).
    # Pred pixels within 1 of the GT ring: (1,3) (2,3) (3,3) shared, (1,4) (3,4) next to them;
    # (1,5) (2,5) (3,5) are 2 away -> P = 5/8; by symmetry R = 5/8 -> F = 5/8.
    gt, pred = square(8, 8, 2, 2, 2), square(8, 8, 2, 4, 2)
    assert db_eval_boundary(gt, pred) == pytest.approx(0.625, abs=1e-12)
    # Prediction = GT square + an isolated pixel at (6,6), which adds 4 boundary pixels
    # (5,5) (5,6) (6,5) (6,6), all > 1 away from the ring: P = 8/12, R = 8/8,
    # F = 2 * 2/3 * 1 / (2/3 + 1) = 0.8
    pred = gt.copy()
    pred[6, 6] = 1
    assert db_eval_boundary(gt, pred) == pytest.approx(0.8, abs=1e-12)


def test_f_shift_against_tolerance_at_davis_size():
    # Left part of a 480x854 frame filled: the boundary is one full column, so a shift by d moves
    # every boundary pixel exactly d away. Tolerance is 8 px: d <= 8 -> F = 1, d = 9 -> F = 0.
    def half(cols):
        m = np.zeros((480, 854), np.uint8)
        m[:, :cols] = 1
        return m
    gt = half(400)
    assert db_eval_boundary(gt, half(408)) == 1.0
    assert db_eval_boundary(gt, half(392)) == 1.0
    assert db_eval_boundary(gt, half(409)) == 0.0
    # a 50 px square (ring cols 99..149) shifted right by 8: each ring pixel has a pixel of the
    # other ring exactly 8 px away (edges) or closer (top/bottom rows overlap) -> F = 1
    gt = square(480, 854, 100, 100, 50)
    assert db_eval_boundary(gt, square(480, 854, 100, 108, 50)) == 1.0
    # shifted right by 59: its ring starts at col 158, 9 px from the GT ring's last col 149 -> 0
    assert db_eval_boundary(gt, square(480, 854, 100, 159, 50)) == 0.0


def test_f_odd_size_literal():
    # 7x5: tolerance ceil(0.008 * sqrt(74)) = 1. Last column filled -> boundary column 3;
    # last two columns filled -> boundary column 2: every pixel 1 away -> F = 1.
    a, b = np.zeros((7, 5), int), np.zeros((7, 5), int)
    a[:, 4:] = 1
    b[:, 3:] = 1
    assert db_eval_boundary(a, b) == 1.0
    c = np.zeros((7, 5), int)
    c[:, 2:] = 1  # boundary column 1: 2 away -> nothing matches -> F = 0
    assert db_eval_boundary(a, c) == 0.0


@pytest.mark.parametrize("shape,bound_th", [((6, 7, 5), 0.008), ((6, 37, 70), 0.008), ((6, 37, 70), 3),
                                            ((6, 40, 131), 5), ((5, 19, 64), 2)])
def test_batched_f_and_j_equal_per_frame_reference(shape, bound_th):
    rng = np.random.default_rng(shape[1] * shape[2])
    gt, pred = random_masks(rng, *shape), random_masks(rng, *shape)
    gt[3] = pred[3]  # identical frame
    f = db_eval_boundary(gt, pred, bound_th=bound_th)
    j = db_eval_iou(gt, pred)
    ref_fs = np.array([ref_f(pred[i], gt[i], bound_th=bound_th) for i in range(shape[0])])
    ref_js = np.array([ref_j(pred[i], gt[i]) for i in range(shape[0])])
    np.testing.assert_array_equal(f, ref_fs)  # bit-identical, not approximately equal
    np.testing.assert_array_equal(j, ref_js)
    assert 0 < np.mean(f) < 1  # the random cases are not trivial
    # single frames give the same numbers as scalars
    assert db_eval_boundary(gt[4], pred[4], bound_th=bound_th) == f[4]
    assert db_eval_iou(gt[4], pred[4]) == j[4]


def test_batched_f_real_size_with_void():
    rng = np.random.default_rng(7)
    gt, pred = random_masks(rng, 3, 480, 854), random_masks(rng, 3, 480, 854)
    void = np.zeros_like(gt)
    void[:, 200:260, :] = 1
    f = db_eval_boundary(gt, pred, void_pixels=void)
    ref_fs = [ref_f(pred[i], gt[i], void[i]) for i in range(3)]
    np.testing.assert_array_equal(f, ref_fs)
    ref_js = [ref_j(pred[i], gt[i], void[i]) for i in range(3)]
    np.testing.assert_array_equal(db_eval_iou(gt, pred, void), ref_js)


def test_video_jf_is_frame_mean():
    rng = np.random.default_rng(3)
    gt, pred = random_masks(rng, 10, 30, 41), random_masks(rng, 10, 30, 41)
    j, f = video_jf(gt, pred)
    assert j == pytest.approx(np.mean([ref_j(pred[i], gt[i]) for i in range(10)]), abs=1e-15)
    assert f == pytest.approx(np.mean([ref_f(pred[i], gt[i]) for i in range(10)]), abs=1e-15)


def test_expression_scores_fed_frame_by_frame_in_any_order_equal_the_whole_video_scores():
    """Streamed evaluation scores each frame as its mask arrives (tracking order: the middle to the
    end, then backwards); the means must be the whole-video numbers (float64, bit for bit) and
    the per-frame DAVIS / published ReVOS formulas."""
    rng = np.random.default_rng(5)
    n = 19  # more than one of _frame_counts' blocks of 8 frames
    gt, pred, fg = random_masks(rng, n, 30, 70), random_masks(rng, n, 30, 70), random_masks(rng, n, 30, 70)
    fg |= gt
    order = list(range(7, n)) + list(range(6, -1, -1))
    scores = ExpressionScores(n, robustness=True)
    empty = ExpressionScores(n, accuracy=True)
    for t in order:
        scores.add(t, gt[t], pred[t], fg[t])
        empty.add(t, gt[t], None)
    got = scores.result()
    j, f = video_jf(gt, pred)
    a, r = revos_accuracy_and_robustness(gt, pred, fg)
    assert got == {"J": j, "F": f, "A": a, "R": r}  # exact, not approximate
    assert got["J"] == pytest.approx(np.mean([ref_j(pred[i], gt[i]) for i in range(n)]), abs=1e-15)
    assert got["F"] == pytest.approx(np.mean([ref_f(pred[i], gt[i]) for i in range(n)]), abs=1e-15)
    assert got["R"] == np.mean([max(1 - ((1 - (g > 0)) * (p > 0)).sum() / (m.sum() + 1e-6), 0.0)
                                for g, p, m in zip(gt, pred, fg > 0)])
    zeros = np.zeros_like(gt)
    assert empty.result() == {"J": video_jf(gt, zeros)[0], "F": video_jf(gt, zeros)[1], "A": revos_accuracy(gt, zeros)}
    with pytest.raises(ValueError, match="frame 3 scored twice"):
        scores.add(3, gt[3], pred[3], fg[3])
    partial = ExpressionScores(n)
    partial.add(0, gt[0], pred[0])
    with pytest.raises(ValueError, match=r"frames \[1, 2, 3"):
        partial.result()


def test_popcount_fallback_matches():
    rng = np.random.default_rng(0)
    packed = M._pack_rows(rng.random((3, 11, 100)) < 0.3)
    np.testing.assert_array_equal(M._popcount_lut(packed), M._popcount(packed))


# ---------------------------------------------------------------------------------------------
# DAVIS statistics
# ---------------------------------------------------------------------------------------------


def test_db_statistics_literal():
    v = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, float("nan")]
    # linspace(1, 10, 5) = 1, 3.25, 5.5, 7.75, 10 -> round(+1e-10) - 1 = ids 0, 2, 5, 7, 9
    # bins v[0:3], v[2:6], v[5:8], v[7:10]; first = (1 + .9 + .8) / 3 = .9, last = nanmean(.3, .2) = .25
    s = db_statistics(v)
    assert s["mean"] == pytest.approx(5.4 / 9)  # nanmean of the 9 numbers
    assert s["recall"] == pytest.approx(0.5)  # 1, .9, .8, .7, .6 of 10 (0.5 and NaN are not > 0.5)
    assert s["decay"] == pytest.approx(0.65)
    # n = 3: linspace = 1, 1.5, 2, 2.5, 3; +1e-10 rounds 2.5 up -> ids 0, 1, 1, 2, 2, last bin = v[2:3]
    # decay = mean(1, .5) - 0 = 0.75 (numpy's half-to-even rounding without 1e-10 would give 0.5)
    assert db_statistics(np.array([1.0, 0.5, 0.0]))["decay"] == pytest.approx(0.75)
    assert db_statistics([0.7]) == {"mean": 0.7, "recall": 1.0, "decay": 0.0}
    with pytest.raises(ValueError):
        db_statistics([])


# ---------------------------------------------------------------------------------------------
# RES
# ---------------------------------------------------------------------------------------------


RES_PAIRS = [
    (np.array([[1, 1], [0, 0]]), np.array([[1, 0], [0, 0]])),  # inter 1, union 2, IoU .5
    (None, np.array([[1, 1], [1, 0]])),  # no mask: inter 0, union = |G| = 3, IoU 0
    (np.zeros((2, 2)), np.zeros((2, 2))),  # empty union: inter 0, union 0, IoU 1
    (torch.ones(2, 2), torch.ones(2, 2, dtype=torch.bool)),  # inter 4, union 4, IoU 1
]


def test_res_metrics_hand_case():
    out = res_metrics(RES_PAIRS)
    assert set(out) == {"cIoU", "gIoU"}
    assert out["cIoU"] == pytest.approx(5 / 9)  # (1 + 0 + 0 + 4) / (2 + 3 + 0 + 4)
    assert out["gIoU"] == pytest.approx(0.625)  # (.5 + 0 + 1 + 1) / 4
    lenient = res_metrics(RES_PAIRS, lenient=True)
    assert lenient["cIoU"] == out["cIoU"] and lenient["gIoU"] == out["gIoU"]
    # Sa2VA-style: the sentence without a mask is skipped -> 5 / 6 and 2.5 / 3
    assert lenient["cIoU_lenient"] == pytest.approx(5 / 6)
    assert lenient["gIoU_lenient"] == pytest.approx(2.5 / 3)
    assert lenient["n_missing"] == 1
    assert lenient["cIoU_lenient"] > lenient["cIoU"]


def test_res_accumulator_merge_and_sum_state():
    a, b = RESAccumulator(), RESAccumulator()
    for pred, gt in RES_PAIRS[:2]:
        a.add(pred, gt)
    for pred, gt in RES_PAIRS[2:]:
        b.add(pred, gt)
    summed = RESAccumulator.from_array(torch.from_numpy(a.to_array() + b.to_array()))  # all-reduce
    merged = RESAccumulator().merge(a).merge(b)
    expected = res_metrics(RES_PAIRS, lenient=True)
    assert summed.compute(lenient=True) == pytest.approx(expected)
    assert merged.compute(lenient=True) == pytest.approx(expected)
    with pytest.raises(ValueError):
        RESAccumulator().compute()
    with pytest.raises(ValueError):
        a.add(np.zeros((2, 3)), np.zeros((3, 2)))


# ---------------------------------------------------------------------------------------------
# ReVOS / referring-VOS
# ---------------------------------------------------------------------------------------------


def test_revos_accuracy_and_robustness_hand_case():
    gt = np.array([[[1, 0], [0, 0]],
                   [[1, 1], [0, 0]]])
    pred = np.array([[[1, 1], [0, 0]],  # TP 1, FP 1, TN 2 -> 3/4 correct, 1 false positive
                     [[0, 0], [0, 0]]])  # TN 2, FN 2 -> 2/4 correct, 0 false positives
    fg = np.array([[[1, 0], [1, 1]],  # video foreground: 3 pixels
                   [[1, 1], [1, 1]]])  # 4 pixels
    assert revos_accuracy(gt, pred) == pytest.approx((0.75 + 0.5) / 2)
    # per frame (published evaluator): (1 - 1/(3+1e-6)) and (1 - 0/(4+1e-6)) = 1, averaged
    expected_r = ((1 - 1 / (3 + 1e-6)) + 1.0) / 2
    assert revos_robustness(gt, pred, fg) == pytest.approx(expected_r, rel=1e-12)
    assert revos_accuracy_and_robustness(gt, pred, fg) == pytest.approx(((0.75 + 0.5) / 2, expected_r))
    # pooled over the expression's frames: 1 - 1 / (7 + 1e-6)
    assert revos_robustness(gt, pred, fg, pooled=True) == pytest.approx(1 - 1 / (7 + 1e-6), rel=1e-12)
    # foreground defaults to GT: frame 0 -> 1 - 1/(1+1e-6) ~ 1e-6, frame 1 -> 1 - 0/(2+1e-6) = 1
    assert revos_robustness(gt, pred) == pytest.approx(((1 - 1 / (1 + 1e-6)) + 1.0) / 2, rel=1e-9)
    # more false positives than foreground pixels clip at 0: 1 - 3/(1+1e-6) < 0
    assert revos_robustness(gt[:1], np.ones((1, 2, 2))) == 0.0


def test_aggregate_revos_excludes_type_2():
    records = [
        {"type_id": 0, "J": 0.6, "F": 0.8, "A": 0.9, "R": 0.7},
        {"type_id": 0, "J": 0.4, "F": 0.6, "A": 0.7, "R": 0.5},
        {"type_id": 1, "J": 0.2, "F": 0.4, "A": 0.5, "R": 0.3},
        {"type_id": 2, "J": 1.0, "F": 1.0, "A": 1.0, "R": 1.0},
    ]
    out = aggregate_revos(records)
    # referring: J (60+40)/2 = 50, F 70, J&F 60, A 80, R 60; reasoning: J 20, F 40, J&F 30, A 50, R 30
    assert out["referring"] == pytest.approx({"J": 50, "F": 70, "J&F": 60, "A": 80, "R": 60, "n": 2})
    assert out["reasoning"] == pytest.approx({"J": 20, "F": 40, "J&F": 30, "A": 50, "R": 30, "n": 1})
    # overall = (referring + reasoning) / 2; the type-2 expression does not enter
    assert out["overall"] == pytest.approx({"J": 35, "F": 55, "J&F": 45, "A": 65, "R": 45, "n": 3})
    with pytest.raises(ValueError):
        aggregate_revos([{"type_id": 5, "J": 0, "F": 0, "A": 0, "R": 0}])


def test_aggregate_refvos_percent():
    out = aggregate_refvos([{"J": 0.5, "F": 0.6}, {"J": 0.7, "F": 0.8}])
    # J = 100 * (.5 + .7) / 2 = 60, F = 70, J&F = 65
    assert out == pytest.approx({"J": 60.0, "F": 70.0, "J&F": 65.0, "n": 2})
    with pytest.raises(ValueError):
        aggregate_refvos([])


def test_revos_matches_published_formulas_exactly():
    # eval_revos.py: A = mean_t mean(gt == pred); R = mean_t max(1 - ((1-gt)*pred).sum() / (fg.sum()
    # + 1e-6), 0) on 0/1 uint8 masks; identical float64 values expected.
    rng = np.random.default_rng(11)
    gt, pred, fg = (rng.random((3, 5, 13, 70)) < [[[[0.2]]], [[[0.3]]], [[[0.5]]]]).astype(np.uint8)
    fg |= gt
    published_a = np.array([np.mean(g == p) for g, p in zip(gt, pred)]).mean()
    published_r = np.array([max(1 - ((1 - g) * p).sum() / (f.sum() + 1e-6), 0.0)
                            for g, p, f in zip(gt, pred, fg)]).mean()
    assert revos_accuracy(gt, pred) == published_a
    assert revos_robustness(gt, pred, fg) == published_r


def test_aggregate_refsav_reports_long_and_short_separately():
    records = [{"type_id": 0, "J": 0.5, "F": 0.7, "A": 0.9}, {"type_id": 0, "J": 0.3, "F": 0.5, "A": 0.7},
               {"type_id": 1, "J": 1.0, "F": 0.9, "A": 1.0}]
    out = M.aggregate_refsav(records)
    assert out["long"] == pytest.approx({"J": 40.0, "F": 60.0, "J&F": 50.0, "A": 80.0, "n": 2})
    assert out["short"] == pytest.approx({"J": 100.0, "F": 90.0, "J&F": 95.0, "A": 100.0, "n": 1})
    # Sa2VA's eval_ref_sav: overall = mean of the two types (not of the expressions)
    assert out["overall"] == pytest.approx({"J": 70.0, "F": 75.0, "J&F": 72.5, "A": 90.0, "n": 3})
    with pytest.raises(ValueError, match="Ref-SAV type_id 2"):
        M.aggregate_refsav([{"type_id": 2, "J": 1.0, "F": 1.0, "A": 1.0}])
