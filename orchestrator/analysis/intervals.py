"""Confidence intervals that say what they are: the median's exact order-statistic interval,
and a bootstrap interval for a ratio of two medians.

The median's interval is distribution-free; its ranks come from `orchestrator.median` (shared
with the executor's precision targets). Below 6 trials no pair of ranks reaches 95 %; the widest
pair (min..max) is then given with the level it does reach, never a rounded claim.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from orchestrator.median import LEVEL, coverage
from orchestrator.median import median_ranks as median_ranks  # re-exported: part of this API

RESAMPLES = 2000
SEED = 20061128  # fixed: the same tables always give the same intervals
MEDIAN_METHOD = "exact binomial order-statistic interval of the median"


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    level: float  # the coverage actually achieved (>= the asked level when `reached`)
    reached: bool  # False: n is too small for the asked level; `level` says what it reaches
    method: str

    def label(self) -> str:
        """'95% exact binomial ...' or '93.8% (n too small for 95%) exact ...'."""
        shown = f"{self.level:.1%}".replace(".0%", "%")
        return shown + ("" if self.reached else " (n too small for the asked level)") + \
            f" {self.method}"


def trials_needed(level: float = LEVEL) -> int:
    """The smallest n whose min..max interval of the median reaches `level` (6 for 95 %)."""
    n = 2
    while coverage(n, 1) < level:
        n += 1
    return n


def median_interval(values: Sequence[float] | NDArray[Any], level: float = LEVEL) -> Interval:
    """The median's exact interval; NaN bounds for fewer than 2 values."""
    ordered = np.sort(np.asarray(values, dtype=float))
    n = len(ordered)
    if n < 2:
        return Interval(float("nan"), float("nan"), 0.0, False, MEDIAN_METHOD)
    lo, hi, achieved = median_ranks(n, level)
    return Interval(float(ordered[lo]), float(ordered[hi]), achieved, achieved >= level,
                    MEDIAN_METHOD)


def _ratio_of_medians(num: NDArray[Any], den: NDArray[Any], axis: int = -1) -> NDArray[Any]:
    result: NDArray[Any] = np.median(num, axis=axis) / np.median(den, axis=axis)
    return result


def ratio_interval(num: Sequence[float] | NDArray[Any], den: Sequence[float] | NDArray[Any],
                   level: float = LEVEL) -> Interval:
    """An interval for median(num) / median(den), each sample resampled on its own (BCa
    bootstrap, seeded). Below 3 values a side, or when a median is 0, the bounds are NaN."""
    a = np.asarray(num, dtype=float)
    b = np.asarray(den, dtype=float)
    method = f"BCa bootstrap of the ratio of medians ({RESAMPLES} resamples)"
    if min(len(a), len(b)) < 3 or np.median(b) == 0:
        return Interval(float("nan"), float("nan"), 0.0, False, method)
    low, high = _bootstrap(a, b, level, "BCa")
    if np.isnan(low) or np.isnan(high):  # BCa degenerates when every resample ties
        method = f"percentile bootstrap of the ratio of medians ({RESAMPLES} resamples)"
        low, high = _bootstrap(a, b, level, "percentile")
    return Interval(low, high, level, True, method)


def _bootstrap(a: NDArray[Any], b: NDArray[Any], level: float,
               method: Literal["BCa", "percentile"]) -> tuple[float, float]:
    with warnings.catch_warnings():  # a degenerate BCa is detected by its NaN bounds
        warnings.simplefilter("ignore")
        result = stats.bootstrap((a, b), _ratio_of_medians, n_resamples=RESAMPLES,
                                 confidence_level=level, method=method, vectorized=True,
                                 random_state=np.random.default_rng(SEED))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
