"""Pass rates with a 95 % Wilson interval, latency percentiles, and thresholds applied exactly."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from statistics import NormalDist

__all__ = ["Z95", "at_least", "at_most", "percentile", "wilson"]

Z95 = NormalDist().inv_cdf(0.975)
"""The two-sided 95 % normal quantile (1.959964…)."""


def wilson(passed: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``passed`` successes in ``n`` trials (``(0, 1)`` for ``n = 0``)."""
    if n == 0:
        return (0.0, 1.0)
    p = passed / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = 0.0 if passed == 0 else min(p, centre - half)  # exact at the ends (float rounding
    high = 1.0 if passed == n else max(p, centre + half)  # left 40/40's upper bound at 0.99999…)
    return (max(0.0, low), min(1.0, high))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (``None`` for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def _exact(x: float) -> Fraction:
    """A threshold as written (``0.9`` is nine tenths, not the nearest binary float)."""
    return Fraction(repr(float(x)))


def at_least(passed: int, n: int, bar: float) -> bool:
    """``passed / n >= bar`` in exact arithmetic (899/1000 against 0.9 is False, 9/10 is True)."""
    return n > 0 and Fraction(passed, n) >= _exact(bar)


def at_most(value: float, bar: float) -> bool:
    """``value <= bar`` with both read as decimals (12 significant digits: float noise in a sum of
    costs does not fail a bar it meets)."""
    return Fraction(f"{value:.12g}") <= _exact(bar)
