"""Tolerance of the audit's meta checks: the weight of the new statistic measured from one real update of a running
mean. Part of the one home of tolerances; notation from suites/tolerances.py (u, gamma_K).

Reasoning. One update is m1 = m0 + w (b - m0), with b the batch mean the framework computed over n values. The test
recomputes b in float64 from the same float32 input, so b carries the framework's summation error, at most
gamma_n max|x| (a pairwise or blocked sum is better; the plain bound holds for any order), and the update itself
three roundings of values no larger than S = max(|m0|, |m1|, |b|): 3 u S. The measured weight
(m1 - m0)·d / d·d, with d = b - m0 over the channels, is then off by at most (3 u S + w gamma_n max|x|) / min|d|
per channel, and the least-squares weight by no more than the worst channel. A misread weight is off by 1 - 2w at
least (the two conventions' values w and 1 - w), orders of magnitude beyond this bound for gaps of order 1.
"""

from __future__ import annotations

from bnsuite.suites.tolerances import roundoff


def update_weight(n: int, x_max: float, s_max: float, gap_min: float, dtype: str = "float32") -> float:
    """Bound on |measured - true| weight of the new statistic (the module docstring), absolute."""
    u = roundoff(dtype)
    gamma_n = n * u / (1 - n * u)
    return (3 * u * s_max + gamma_n * x_max) / gap_min
