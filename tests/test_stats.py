"""Welch's test (gatedconv.stats.welch) at confidence levels other than 95%, with no spread on one or both sides,
and the properties that tie its p-value and interval together.

Reference values: SciPy 1.17 (not a dependency of the package), ``scipy.stats.ttest_ind(a, b, equal_var=False)``
and its ``confidence_interval(level)``; the t quantiles of integer degrees of freedom are also in printed t
tables (t_{0.95, 2} = 2.919986, t_{0.995, 2} = 9.924843, t_{0.95, 3} = 2.353363, t_{0.995, 3} = 5.840909).
"""
from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gatedconv.stats import welch

TWO_SEEDS_EACH = ([93.6, 93.8], [94.0, 94.2])  # se = sqrt(0.02), df = 2 exactly


@pytest.mark.parametrize("level, low, high", [
    (0.90, -0.8129483210, 0.0129483210),  # -0.4 -+ 2.919986 * sqrt(0.02)
    (0.95, -1.0084869845, 0.2084869845),  # -0.4 -+ 4.302653 * sqrt(0.02)
    (0.99, -1.8035847859, 1.0035847859),  # -0.4 -+ 9.924843 * sqrt(0.02)
])
def test_welch_interval_at_other_levels_uses_the_t_quantile_of_that_level(level, low, high):
    """The interval at 90% and 99% is diff -+ t_{(1 + level) / 2, df} * se with Student's t (a normal quantile,
    1.645 at 90%, would give -0.633 to +0.233), and t, df, p do not depend on the level."""
    c = welch(*TWO_SEEDS_EACH, level=level)
    assert (c.low, c.high) == pytest.approx((low, high), abs=1e-8)
    assert c.diff == pytest.approx(-0.4, abs=1e-12) and c.df == pytest.approx(2.0, abs=1e-12)
    assert c.t == pytest.approx(-2.8284271247, abs=1e-9) and c.p == pytest.approx(0.1055728090, abs=1e-9)
    assert (c.n_a, c.n_b) == (2, 2)


@pytest.mark.parametrize("level, low, high", [
    (0.90, -5.8406640176, 0.5906640176),
    (0.99, -9.4196923236, 4.1696923236),
])
def test_welch_interval_at_other_levels_with_fractional_degrees_of_freedom(level, low, high):
    """Unequal variances (df = 4.2363, between the tabulated integers): the interval matches SciPy at 90% and
    99% as it does R's t.test at 95%."""
    c = welch([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.5], level=level)
    assert (c.low, c.high) == pytest.approx((low, high), abs=1e-8)
    assert c.df == pytest.approx(4.2363146604, abs=1e-9) and c.p == pytest.approx(0.1579142677, abs=1e-9)


def test_welch_with_no_spread_on_one_side_is_the_one_sample_test_of_the_other():
    """A constant sample adds nothing to the standard error: df is n - 1 of the other sample (3 here), and t,
    p and the 90%/99% intervals are SciPy's; swapping the samples mirrors everything."""
    a, b = [5.0, 5.0, 5.0], [1.0, 2.0, 3.0, 4.0]
    c = welch(a, b, level=0.90)
    assert c.diff == 2.5 and c.df == pytest.approx(3.0, abs=1e-12)
    assert c.t == pytest.approx(3.8729833462, abs=1e-9) and c.p == pytest.approx(0.0304662917, abs=1e-9)
    assert (c.low, c.high) == pytest.approx((0.9809104349, 4.0190895651), abs=1e-8)  # 2.5 -+ 2.353363 * se
    c99 = welch(a, b, level=0.99)
    assert (c99.low, c99.high) == pytest.approx((-1.2702907472, 6.2702907472), abs=1e-8)  # 2.5 -+ 5.840909 * se
    m = welch(b, a, level=0.90)
    assert (m.diff, m.t, m.p, m.df) == pytest.approx((-2.5, -c.t, c.p, 3.0))
    assert (m.low, m.high) == pytest.approx((-c.high, -c.low))


@pytest.mark.parametrize("a, b, diff, t, p", [
    ([2.0, 2.0], [1.0, 1.0, 1.0], 1.0, math.inf, 0.0),
    ([1.0, 1.0, 1.0], [2.0, 2.0], -1.0, -math.inf, 0.0),
    ([0.1, 0.1, 0.1], [0.1, 0.1], 0.0, 0.0, 1.0),  # float sums: fmean([0.1] * 3) != 0.1
])
def test_welch_with_no_spread_on_either_side(a, b, diff, t, p):
    """Two constant samples: the difference is exact, so the interval is that point at any level, t is +-inf
    with p = 0 (SciPy agrees) where the values differ, and t = 0 with p = 1 where they are equal."""
    for level in (0.90, 0.99):
        c = welch(a, b, level=level)
        assert (c.diff, c.low, c.high, c.t, c.p) == (diff, diff, diff, t, p)


@given(value=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), n=st.integers(2, 9),
       m=st.integers(2, 9))
def test_welch_finds_no_difference_between_samples_of_one_repeated_value(value, n, m):
    """Samples that repeat the same value are equal whatever their sizes: difference 0, p = 1. (A mean summed in
    floating point makes [0.1] * 3 differ from [0.1] * 2 by 1e-17, which with no spread read as p = 0.)"""
    c = welch([value] * n, [value] * m)
    assert (c.diff, c.low, c.high, c.t, c.p) == (0.0, 0.0, 0.0, 0.0, 1.0)


samples = st.lists(st.floats(min_value=0.0, max_value=100.0, allow_nan=False), min_size=2, max_size=6).filter(
    lambda xs: max(xs) - min(xs) > 1e-3)


@given(a=samples, b=samples, level=st.sampled_from([0.80, 0.90, 0.95, 0.99]))
def test_welch_interval_excludes_zero_exactly_when_p_is_below_one_minus_the_level(a, b, level):
    """The interval and the p-value are the same test read two ways: 0 lies outside the interval at ``level``
    iff p < 1 - level; a higher level gives a wider interval around the same difference."""
    c = welch(a, b, level=level)
    assume(abs(c.p - (1 - level)) > 1e-6)  # at the boundary itself the bisection's last digit decides
    assert (c.low > 0 or c.high < 0) == (c.p < 1 - level)
    assert c.low < c.diff < c.high
    wider = welch(a, b, level=0.999)
    assert wider.low < c.low and wider.high > c.high and wider.diff == c.diff
