"""Tolerances of real architectures (bnsuite/models): the same network at two batch sizes, and the same network in two
frameworks after a port. Part of the one home of tolerances; notation from suites/tolerances.py (u, gamma_K).

Reasoning. In inference mode every layer maps each sample on its own, so in exact arithmetic a sample's output does
not depend on the batch. In floating point only the order of each layer's K-term dot products (convolution and dense
kernels pick their blocking by shape) can change. Two orders of one K-term sum differ by at most 2 gamma_K sum|w x|.
For the random-sign terms of a randomly initialized network, rounding errors are of random sign, so the probabilistic
bound of Higham and Mary (SIAM J. Sci. Comput. 41(5), 2019) applies: |error| <= lambda sqrt(K) u sum|w x| with
lambda ~ 1 except with probability exp(-lambda^2 / 2) ... and sum|w x| <= sqrt(K) |w|_2 |x|_2 ~ sqrt(K) max|y| for
terms of one size. Each layer therefore moves its output by at most 2 K u relative to its scale (lambda = 1 on each of
the two orders). BatchNorm in inference mode, ReLU and pooling do not amplify relative errors beyond 1 for normalized
activations (suites/tolerances.py: linear in depth), so the relative output error is bounded by the sum over the
network's kernels, 2 u sum_l K_l. Summing over every kernel (not only the longest path) keeps it an upper bound for
residual and dense connections. For ResNet-18 at float32 this is about 4e-3 relative; batch statistics instead move a
layer's output by O(1/sqrt(n)) relative (0.1 to 1 at these batch sizes), so the two are separated.

Two frameworks computing the same network differ by at most the sum of their two such errors: 4 u sum_l K_l.
"""

from __future__ import annotations

from bnsuite.suites.tolerances import Tol, roundoff


def _fan_in_roundoff(factor: int, fan_ins: list[int], y_max: float, dtype: str) -> Tol:
    """factor u sum_l K_l relative to max|y|, absolute: the module docstring's bound with its factor."""
    u = roundoff(dtype)
    rel = factor * u * float(sum(fan_ins))
    return Tol(atol=rel * y_max, rtol=0.0,
               why=f"{factor} u sum K over {len(fan_ins)} kernels (sum K = {sum(fan_ins)}, u = {u:.2g}): relative "
                   f"{rel:.3g} x max|y| {y_max:.3g} (suites/tolerances_models.py)")


def real_model_two_batch_sizes(fan_ins: list[int], y_max: float, dtype: str = "float32") -> Tol:
    """One inference network's output at two batch sizes (module docstring): 2 u sum_l K_l relative to max|y|."""
    return _fan_in_roundoff(2, fan_ins, y_max, dtype)


def real_model_two_frameworks(fan_ins: list[int], y_max: float, dtype: str = "float32") -> Tol:
    """The same network in two frameworks with the same weights: 4 u sum_l K_l relative to max|y|."""
    return _fan_in_roundoff(4, fan_ins, y_max, dtype)


def copied_vector(dtype: str = "float32") -> float:
    """Relative difference allowed between a BatchNorm vector and its copy in another framework: one rounding to the
    storage dtype (a float64 source read into float32), u."""
    return roundoff(dtype)
