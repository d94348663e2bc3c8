"""The intervals are what their labels say: exact order-statistic ranks, honest levels at small n,
and a ratio interval that covers the true ratio."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from orchestrator.analysis.intervals import (
    median_interval,
    median_ranks,
    ratio_interval,
    trials_needed,
)


@pytest.mark.parametrize(("n", "ranks"), [(6, (0, 5)), (10, (1, 8)), (20, (5, 14)),
                                          (50, (17, 32))])
def test_ranks_are_the_exact_binomial_ones(n: int, ranks: tuple[int, int]) -> None:
    lo, hi, achieved = median_ranks(n)
    assert (lo, hi) == ranks
    assert achieved >= 0.95
    # the (lo+1)-th smallest..largest covers with 1 - 2 P(B <= lo); one rank tighter is < 95 %
    assert achieved == pytest.approx(1 - 2 * stats.binom.cdf(lo, n, 0.5))
    assert 1 - 2 * stats.binom.cdf(lo + 1, n, 0.5) < 0.95


@pytest.mark.parametrize("n", range(6, 61))
def test_agrees_with_scipys_quantile_test(n: int) -> None:
    values = np.arange(1.0, n + 1)
    ours = median_interval(values)
    test: Any = stats.quantile_test(values, q=float(np.median(values)), p=0.5)
    theirs = test.confidence_interval(0.95)  # scipy-stubs type this result too narrowly
    assert (ours.low, ours.high) == (float(theirs.low), float(theirs.high))
    assert ours.reached


def test_too_few_trials_say_so_and_what_they_reach() -> None:
    five = median_interval([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (five.low, five.high) == (1.0, 5.0)
    assert five.level == pytest.approx(0.9375) and not five.reached
    assert five.label().startswith("93.8% (n too small")
    assert trials_needed() == 6
    assert trials_needed(0.99) == 8
    one = median_interval([3.0])
    assert math.isnan(one.low) and not one.reached


def test_coverage_is_at_least_the_level_on_skewed_data() -> None:
    rng = np.random.default_rng(1)
    true_median = math.log(2)  # of Exp(1)
    hits = [(iv := median_interval(rng.exponential(size=10))).low <= true_median <= iv.high
            for _ in range(4000)]
    assert np.mean(hits) >= 0.95 - 0.01  # 4000 draws: the standard error is ~0.3 %


def test_ratio_interval_covers_a_known_ratio_and_is_reproducible() -> None:
    rng = np.random.default_rng(7)
    base = rng.lognormal(mean=4.0, sigma=0.05, size=15)
    slow = 2.0 * rng.lognormal(mean=4.0, sigma=0.05, size=15)
    first = ratio_interval(slow, base)
    assert first.low < 2.0 < first.high
    assert first.high - first.low < 0.2
    assert ratio_interval(slow, base) == first
    assert "BCa bootstrap of the ratio of medians" in first.method


def test_ratio_interval_refuses_too_little_data() -> None:
    few = ratio_interval([1.0, 2.0], [1.0, 2.0, 3.0])
    assert math.isnan(few.low) and not few.reached
    zero = ratio_interval([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert math.isnan(zero.high)
