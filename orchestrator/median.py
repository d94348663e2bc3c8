"""The median's exact order-statistic interval, stdlib only: the ranks that bound it.

The number of trials below the true median is Binomial(n, 1/2), so the k-th smallest and k-th
largest of n trials cover it with probability 1 - 2 P(B <= k-1), exactly. Below 6 trials no
pair of ranks reaches 95 %; the widest pair (min..max) is then given with the level it does
reach (93.75 % at n = 5), never a rounded claim.

It sits below every stage because two need it: analysis/ reports the interval, and run/ stops
a point's trials once the interval is as narrow as the suite asks (a precision target).
"""

from __future__ import annotations

from math import comb

LEVEL = 0.95


def coverage(n: int, k: int) -> float:
    """Coverage of the interval from the k-th smallest to the k-th largest of n (k >= 1)."""
    below = sum(comb(n, i) for i in range(k))  # exact integers: 2**n * P(B <= k-1)
    return 1 - 2 * below / (1 << n)


def median_ranks(n: int, level: float = LEVEL) -> tuple[int, int, float]:
    """0-based ranks (lo, hi) of the shortest symmetric exact interval reaching `level`, and
    the coverage it achieves; (0, n-1, its coverage) when none reaches it."""
    k = 1
    while 2 * (k + 1) <= n + 1 and coverage(n, k + 1) >= level:
        k += 1
    return k - 1, n - k, coverage(n, k)


def relative_halfwidth(values: list[float], level: float = LEVEL) -> float | None:
    """Half the width of the median's exact interval over the median, when that interval
    reaches `level`; None when it does not (too few values) or the median is 0."""
    ordered = sorted(values)
    n = len(ordered)
    if n < 2:
        return None
    lo, hi, achieved = median_ranks(n, level)
    middle = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    if achieved < level or middle == 0:
        return None
    return (ordered[hi] - ordered[lo]) / 2 / abs(middle)
