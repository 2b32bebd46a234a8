"""Intervals for the gate: Wilson's score interval for a share of n examples, and Newcombe's hybrid score
interval for the difference of two shares (a drop against a baseline)."""

from __future__ import annotations

import math

Z95 = 1.959963984540054
"""The 97.5% quantile of the standard normal: a two-sided 95% interval."""


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson (1927) score interval for a binomial proportion successes / n (95% by default).

    Unlike the normal (Wald) interval it stays inside [0, 1] and keeps its coverage near 0 and 1, where robust
    accuracies often lie.
    """
    if n <= 0:
        raise ValueError(f"n = {n}: an interval needs at least one example")
    if not 0 <= successes <= n:
        raise ValueError(f"successes = {successes} is outside [0, n = {n}]")
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(p1: float, ci1: tuple[float, float], p2: float, ci2: tuple[float, float]) -> tuple[float, float]:
    """Newcombe (1998, method 10) interval for p1 - p2 from the two Wilson intervals.

    It treats the two shares as independent; two runs on the same examples are positively correlated, which
    makes this interval wider than a paired one (conservative for a gate that compares its bounds).
    """
    (l1, u1), (l2, u2) = ci1, ci2
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)
