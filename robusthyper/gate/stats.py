"""Newcombe's hybrid score interval for the difference of two shares (a drop against a baseline), from the
Wilson intervals of each (`robusthyper.run.tables.wilson`)."""

from __future__ import annotations

import math


def newcombe(p1: float, ci1: tuple[float, float], p2: float, ci2: tuple[float, float]) -> tuple[float, float]:
    """Newcombe (1998, method 10) interval for p1 - p2 from the two Wilson intervals.

    It treats the two shares as independent; two runs on the same examples are positively correlated, which
    makes this interval wider than a paired one (conservative for a gate that compares its bounds).
    """
    (l1, u1), (l2, u2) = ci1, ci2
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)
