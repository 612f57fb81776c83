"""The statistics of online experiments (pure; the standard library only).

* :func:`wilson_interval`: a confidence interval for a proportion (HR@10 = hits / clicks);
* :func:`mean_interval`: a normal-approximation interval for a mean from its sum and sum
  of squares (NDCG@10 per click);
* :func:`two_proportion_test`: the pooled two-proportion z-test (two-sided), and
  :func:`difference_interval`, the unpooled (Wald) interval of ``p2 - p1``;
* :func:`sign_test`: the exact two-sided binomial test of ``wins_a`` against ``wins_b``
  at p = 1/2 (team-draft interleaving; ties left out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

_N = NormalDist()


def z_for(confidence: float) -> float:
    """The two-sided normal quantile for ``confidence`` (0.95 -> 1.96)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    return _N.inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``successes / n``; (0, 1) with no trials."""
    if n <= 0:
        return 0.0, 1.0
    z = z_for(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(total: float, total_sq: float, n: float,
                  confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` of a per-click quantity from its sum and sum of squares
    (normal approximation, sample variance); the interval is the mean itself below 2."""
    if n <= 0:
        return 0.0, 0.0, 0.0
    mean = total / n
    if n < 2:
        return mean, mean, mean
    var = max((total_sq - n * mean * mean) / (n - 1), 0.0)
    half = z_for(confidence) * math.sqrt(var / n)
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class ProportionTest:
    """Arm 2 against arm 1: the difference of proportions, its interval, z and p."""

    difference: float  # p2 - p1
    low: float
    high: float
    z: float
    p_value: float


def two_proportion_test(k1: float, n1: float, k2: float, n2: float,
                        confidence: float = 0.95) -> ProportionTest:
    """The pooled two-sided z-test of ``k2/n2`` against ``k1/n1``, and the unpooled
    interval of the difference. With no clicks in an arm: difference 0, p 1."""
    if n1 <= 0 or n2 <= 0:
        return ProportionTest(0.0, -1.0, 1.0, 0.0, 1.0)
    p1, p2 = k1 / n1, k2 / n2
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (p2 - p1) / se if se > 0 else 0.0
    p = 2 * _N.cdf(-abs(z)) if se > 0 else 1.0
    low, high = difference_interval(k1, n1, k2, n2, confidence)
    return ProportionTest(p2 - p1, low, high, z, p)


def difference_interval(k1: float, n1: float, k2: float, n2: float,
                        confidence: float = 0.95) -> tuple[float, float]:
    """The Wald interval of ``k2/n2 - k1/n1`` at ``confidence`` (two-sided)."""
    if n1 <= 0 or n2 <= 0:
        return -1.0, 1.0
    p1, p2 = k1 / n1, k2 / n2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    half = z_for(confidence) * se
    return p2 - p1 - half, p2 - p1 + half


def sign_test(wins_a: int, wins_b: int) -> float:
    """Exact two-sided p-value of ``wins_a`` against ``wins_b`` under p = 1/2 (1 with none)."""
    n = wins_a + wins_b
    if n == 0:
        return 1.0
    k = min(wins_a, wins_b)
    # P(X <= k) for X ~ Binomial(n, 1/2), summed in log space (n may be large)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
            for i in range(k + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(x - top) for x in logs)
    return min(1.0, 2 * tail)
