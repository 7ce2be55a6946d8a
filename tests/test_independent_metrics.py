"""The independent scorer of the end-to-end evaluation tests (tests/independent_metrics.py) against
cases computed by hand from docs/metrics.md's definitions."""
import numpy as np
import pytest

import independent_metrics as M


def test_boundary_map_is_east_south_south_east_differences():
    centre = np.zeros((3, 3), bool)
    centre[1, 1] = True
    # (0,0): SE differs; (0,1): S differs; (1,0): E differs; (1,1): E/S/SE differ; the rest: none
    assert M.boundary(centre).astype(int).tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 0]]
    corner = np.zeros((3, 3), bool)
    corner[2, 2] = True  # last row compares east only, last column south only, bottom-right never
    assert M.boundary(corner).astype(int).tolist() == [[0, 0, 0], [0, 1, 1], [0, 1, 0]]
    assert not M.boundary(np.ones((4, 5), bool)).any()  # a full frame has no boundary


def test_tolerance_and_disk():
    assert M.tolerance(480, 854) == 8  # DAVIS's 8 px at 480p
    assert M.tolerance(3, 3) == 1 and M.tolerance(96, 128) == 2
    assert M.disk(2).tolist() == [[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]]


def test_frame_j_and_f_hand_case():
    gt = np.zeros((3, 3), bool)
    gt[0, 0] = True  # boundary {(0,0)}
    pred = np.zeros((3, 3), bool)
    pred[1, 1] = True  # boundary {(0,0), (0,1), (1,0), (1,1)}; tolerance 1 px: a plus-shaped disk
    # precision: 3 of pred's 4 boundary pixels lie within 1 px of (0,0); recall: (0,0) is matched
    assert M.frame_f(pred, gt) == pytest.approx(2 * 0.75 * 1.0 / 1.75)
    assert M.frame_j(pred, gt) == 0.0
    both = gt | pred
    assert M.frame_j(both, gt) == 0.5


def test_empty_and_full_conventions():
    empty, full = np.zeros((4, 4), bool), np.ones((4, 4), bool)
    some = empty.copy()
    some[1:3, 1:3] = True
    assert M.frame_j(empty, empty) == 1.0 and M.frame_f(empty, empty) == 1.0
    assert M.frame_f(empty, some) == 0.0 and M.frame_f(some, empty) == 0.0  # P=1,R=0 / P=0,R=1
    assert M.frame_f(full, full) == 1.0  # neither has a boundary
    assert M.frame_f(full, some) == 0.0 and M.frame_j(full, some) == 4 / 16


def test_expression_mean_and_split_aggregation():
    gt = np.zeros((2, 3, 3), bool)
    gt[:, 0, 0] = True
    pred = gt.copy()
    pred[1] = False  # frame 0 perfect (J = F = 1), frame 1 empty prediction (J = F = 0)
    assert M.expression_jf(gt, pred) == (0.5, 0.5)
    assert M.refvos_split([(0.5, 0.25), (1.0, 0.75)]) == {"J": 75.0, "F": 50.0, "J&F": 62.5}


def test_res_split_strict_and_lenient_hand_case():
    gt1 = np.array([[1, 1, 1, 0]], bool)
    pred1 = np.array([[0, 0, 1, 1]], bool)  # inter 1, union 4
    gt2 = np.array([[1, 1, 0, 0]], bool)  # no mask predicted: inter 0, union 2
    got = M.res_split([(pred1, gt1), (None, gt2)])
    assert got == {"cIoU": pytest.approx(100 / 6), "gIoU": 12.5, "cIoU_lenient": 25.0, "gIoU_lenient": 25.0}


def test_revos_a_r_and_table_hand_case():
    gt = np.array([[[1, 1, 0, 0]], [[0, 0, 0, 0]]], bool)
    pred = np.array([[[1, 0, 1, 0]], [[0, 0, 0, 1]]], bool)
    fg = np.array([[[1, 1, 1, 0]], [[1, 0, 0, 0]]], bool)
    a, r = M.revos_a_r(gt, pred, fg)
    assert a == pytest.approx((2 / 4 + 3 / 4) / 2)
    assert r == pytest.approx((1 - 1 / (3 + 1e-6) + 1 - 1 / (1 + 1e-6)) / 2)
    rows = [dict(type_id=0, J=0.5, F=0.5, A=1.0, R=1.0), dict(type_id=1, J=1.0, F=0.0, A=0.5, R=0.5),
            dict(type_id=2, J=0.0, F=0.0, A=0.0, R=0.0)]
    table = M.revos_split(rows)
    assert table["referring"] == {"J": 50.0, "F": 50.0, "A": 100.0, "R": 100.0, "J&F": 50.0}
    assert table["overall"] == {"J": 75.0, "F": 25.0, "J&F": 50.0, "A": 75.0, "R": 75.0}
