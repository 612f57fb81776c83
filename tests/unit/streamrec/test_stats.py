"""The experiment statistics against scipy on fixed inputs."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sp

from streamrec.stats import (
    difference_interval,
    mean_interval,
    sign_test,
    two_proportion_test,
    wilson_interval,
    z_for,
)


def test_the_quantile_is_the_normal_one() -> None:
    assert z_for(0.95) == pytest.approx(sp.norm.ppf(0.975))
    assert z_for(0.99) == pytest.approx(sp.norm.ppf(0.995))
    with pytest.raises(ValueError, match="confidence"):
        z_for(1.0)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (57, 200), (990, 1000), (10, 10)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    ci = sp.binomtest(k, n).proportion_ci(0.95, method="wilson")
    lo, hi = wilson_interval(k, n, 0.95)
    assert (lo, hi) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_no_trials_give_the_whole_interval() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert mean_interval(0.0, 0.0, 0) == (0.0, 0.0, 0.0)


def test_mean_interval_matches_the_t_free_normal_interval() -> None:
    xs = [0.0, 1.0, 0.5, 0.63, 0.0, 0.0, 0.39, 1.0, 0.0, 0.43]
    mean, lo, hi = mean_interval(sum(xs), sum(x * x for x in xs), len(xs), 0.95)
    se = sp.sem(xs)
    want = sp.norm.interval(0.95, loc=sum(xs) / len(xs), scale=se)
    assert mean == pytest.approx(sum(xs) / len(xs))
    assert (lo, hi) == (pytest.approx(want[0]), pytest.approx(want[1]))


@pytest.mark.parametrize(("k1", "n1", "k2", "n2"), [(120, 1000, 150, 1000), (30, 400, 29, 380),
                                                    (5, 50, 0, 60)])
def test_two_proportion_test_matches_the_pooled_z_test(k1: int, n1: int, k2: int, n2: int) -> None:
    t = two_proportion_test(k1, n1, k2, n2)
    p = (k1 + k2) / (n1 + n2)
    z = (k2 / n2 - k1 / n1) / math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    assert t.z == pytest.approx(z)
    assert t.p_value == pytest.approx(2 * sp.norm.sf(abs(z)))
    # the pooled z-test is the chi-square test of the 2x2 table without continuity correction
    chi2 = sp.chi2_contingency([[k1, n1 - k1], [k2, n2 - k2]], correction=False)
    assert t.p_value == pytest.approx(chi2.pvalue)
    lo, hi = difference_interval(k1, n1, k2, n2)
    assert lo < t.difference < hi
    assert (t.low, t.high) == (lo, hi)


def test_an_arm_without_clicks_proves_nothing() -> None:
    t = two_proportion_test(0, 0, 5, 10)
    assert (t.p_value, t.difference) == (1.0, 0.0)


@pytest.mark.parametrize(("a", "b"), [(0, 0), (5, 5), (10, 3), (3, 10), (60, 40), (520, 480),
                                      (0, 12)])
def test_sign_test_matches_scipy_binomtest(a: int, b: int) -> None:
    want = 1.0 if a + b == 0 else sp.binomtest(a, a + b, 0.5).pvalue
    assert sign_test(a, b) == pytest.approx(want)
