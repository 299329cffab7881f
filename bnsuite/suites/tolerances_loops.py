"""Tolerances of the training loops (suites/test_training_loops.py), built on the layer bounds of
bnsuite/suites/tolerances/ (the reasoning there: u the unit roundoff, reductions bounded by gamma_n ~ n u)."""

from __future__ import annotations

import numpy as np

from bnsuite.suites.tolerances import Tol, bn_backward, roundoff, running_stats


def _param_grad_err(x, dy, axis: int, scale, eps: float, dtype: str) -> float:
    """Bound of the error of (dscale, doffset) of L = sum(y * dy) / m: bn_backward's bounds of the two reductions of
    sum(y * dy), divided by m (the division itself is one more rounding, inside bn_backward's (n + 4) u margin)."""
    t = bn_backward(x, dy, axis, np.zeros_like(np.asarray(x, np.float64)), scale, eps, dtype=dtype)
    return max(t["dscale"].atol, t["doffset"].atol) / np.asarray(x).shape[0]


def sgd_step(micro_batches, cotangents, axis: int, scale, offset, eps: float, *, dtype: str, lr: float,
             grad_max: float) -> Tol:
    """scale/offset after ONE SGD step whose gradient is the mean of the k (micro-)batch gradients.

    Each gradient is within _param_grad_err of exact; their mean is within the largest of those bounds, plus k
    roundings of the running sum of k values of size <= grad_max (k u grad_max: the framework's accumulator or
    autograd's .grad additions). The step w - lr * g multiplies that by lr and adds two roundings of
    |w| + lr |g| (the product and the subtraction)."""
    u = roundoff(dtype)
    k = len(micro_batches)
    g_err = max(_param_grad_err(x, dy, axis, scale, eps, dtype) for x, dy in zip(micro_batches, cotangents))
    w = max(float(np.max(np.abs(scale))), float(np.max(np.abs(offset))))
    atol = lr * (g_err + k * u * grad_max) + 2 * u * (w + lr * grad_max)
    return Tol(atol, 0.0, f"SGD step, mean of {k} gradients: lr (max gradient bound {g_err:.2g} + k u |g|) "
                          f"+ 2u (|w| + lr |g|), u={u:.2g}")


def step_difference(a: Tol, b: Tol) -> Tol:
    """The difference of two parameter updates, each within its bound of its oracle value: the sum of the bounds
    (triangle inequality)."""
    return Tol(a.atol + b.atol, 0.0, f"difference of two steps: sum of their bounds ({a.why})")


def accumulated_running_stats(micro_batches, axis: int, *, dtype: str, state_scale: float) -> Tol:
    """Running statistics after k momentum updates, one per micro-batch: the layer bound running_stats for k steps
    (each step's batch-statistic bound plus 2u of EMA arithmetic; the EMA weights sum to at most 1)."""
    return running_stats(micro_batches, axis, stats_dtype=dtype, steps=len(micro_batches), state_scale=state_scale)


def averaged_params(step: Tol, steps: int, *, dtype: str, value_max: float) -> Tol:
    """Averaged scale/offset after T steps. The parameter gradients of sum(y * dy) do not depend on the scale
    (dscale = sum(dy * xhat), doffset = sum(dy)), so the error of the t-th snapshot is at most t step bounds (the
    step errors add); an average with non-negative weights summing to 1 (equal, EMA, debiased EMA) stays within
    the largest, T step bounds, plus T roundings of the averaging arithmetic on values of size value_max."""
    u = roundoff(dtype)
    return Tol(steps * step.atol + 2 * steps * u * value_max, 0.0,
               f"average of {steps} snapshots, the t-th within t step bounds, + 2 T u |w|, u={u:.2g} ({step.why})")


def averaged_running_stats(batches, axis: int, *, dtype: str, state_scale: float) -> Tol:
    """Averaged (or recomputed) running statistics over T steps: every snapshot (and the cumulative average over the
    same batches) is within the layer's running_stats bound for T steps, and a convex average of them adds T
    roundings of values of size state_scale."""
    t = running_stats(batches, axis, stats_dtype=dtype, steps=len(batches), state_scale=state_scale)
    u = roundoff(dtype)
    return Tol(t.atol + 2 * len(batches) * u * state_scale, t.rtol, f"convex average of snapshots each within: {t.why}")
