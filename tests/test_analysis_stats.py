"""Ablation statistics: Student t quantiles against published tables and closed forms, confidence
intervals and paired differences against hand-computed cases."""
import math

import pytest

from projects.salma.analysis.stats import mean_ci, paired_difference, t_quantile


@pytest.mark.parametrize("df, expected", [
    # two-sided 95 % critical values, Student t table (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2)
    (1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (10, 2.228), (30, 2.042), (100, 1.984),
])
def test_t_quantile_matches_the_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=6e-4)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995])
def test_t_quantile_closed_forms(p):
    # df = 1 is the Cauchy distribution; df = 2 has t = (2p - 1) / sqrt(2 p (1 - p)).
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)
    assert t_quantile(1 - p, 5) == pytest.approx(-t_quantile(p, 5), rel=1e-9)  # symmetric


def test_t_quantile_refuses_bad_arguments():
    with pytest.raises(ValueError, match="df"):
        t_quantile(0.975, 0)
    with pytest.raises(ValueError, match="p"):
        t_quantile(1.0, 3)


def test_mean_ci_by_hand():
    # mean 72, sample sd 2, se 2 / sqrt(3), t(0.975, 2) = 4.302653 -> half-width 4.96828
    ci = mean_ci([70.0, 72.0, 74.0])
    assert ci.n == 3 and ci.mean == pytest.approx(72.0)
    assert ci.std == pytest.approx(2.0)
    assert ci.half_width == pytest.approx(4.302653 * 2 / math.sqrt(3), rel=1e-6)
    assert (ci.low, ci.high) == pytest.approx((72 - ci.half_width, 72 + ci.half_width))


def test_mean_ci_of_one_value_has_no_interval():
    ci = mean_ci([5.0])
    assert ci.n == 1 and ci.mean == 5.0 and math.isnan(ci.half_width)
    with pytest.raises(ValueError, match="no values"):
        mean_ci([])


def test_paired_difference_by_hand():
    # seeds 0, 1, 2: d = [1, 2, 2]; mean 5/3, sd sqrt(1/3), se 1/3, half-width 4.302653 / 3
    baseline = {0: 1.0, 1: 2.0, 2: 3.0}
    other = {0: 2.0, 1: 4.0, 2: 5.0, 3: 9.0}  # seed 3 has no partner: not paired, not used
    diff = paired_difference(other, baseline)
    assert diff.n == 3 and diff.mean == pytest.approx(5 / 3)
    assert diff.half_width == pytest.approx(4.302653 / 3, rel=1e-6)
    assert diff.seeds == [0, 1, 2]


def test_paired_difference_is_tighter_than_the_unpaired_one():
    # a large seed effect shared by both configs cancels in the paired difference
    a = {0: 50.0, 1: 60.0, 2: 70.0}
    b = {0: 51.0, 1: 61.2, 2: 70.9}
    diff = paired_difference(b, a)
    assert diff.mean == pytest.approx((1.0 + 1.2 + 0.9) / 3)
    assert diff.half_width < 0.1 * mean_ci(list(b.values())).half_width
