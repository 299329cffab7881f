"""Tolerances of the compiled and transformed lane (suites/test_compiled.py), derived from the layer bounds of
tolerances.py.

A compiled or transformed path computes the same exact values as the eager layer, in float32, possibly in another
order: Inductor generates its own C++ reductions (var_mean in one loop nest), vmap and jacrev evaluate batch rules
and vmapped vector-Jacobian products, the channels_last kernels reduce over another memory order. The worst-case
bounds of tolerances.py hold for ANY order of a recursive or blocked summation (Higham's gamma_n bound), so:

* against the float64 oracle, a path is held to the same bound as the eager layer;
* against the eager layer, a path declared "rounding" differs by at most the sum of the two bounds (both are within
  their bound of the one exact value, triangle inequality); a path declared "bitwise" (the same ATen kernels on the
  same data: aot_eager, torch.export, functional_call) must give the same bits, tolerance 0;
* the Jacobian of jacrev, contracted with dy, adds one reduction per element of dx (`jacobian_contraction`).
"""

from __future__ import annotations

import numpy as np

from bnsuite.suites import tolerances as tl
from bnsuite.suites.tolerances import Tol


def vs_eager(tol_vs_oracle: Tol, agreement: str) -> Tol:
    """Path against the eager layer: 0 where the path is declared bitwise, else twice the bound against exact."""
    if agreement == "bitwise":
        return tl.exact("declared bitwise: the same kernels on the same data")
    if agreement != "rounding":
        raise ValueError(f"unknown agreement {agreement!r}: 'bitwise' or 'rounding'")
    return tl.two_results_of_one_exact_value(tol_vs_oracle, "the path and eager compute the same exact value")


def output(x, axis: int, y_ref, scale, eps: float, dtype: str, normalize_var=None) -> Tol:
    """A path's output against the oracle: the layer bound (one-pass variance, the weakest assumption, because a
    compiler may choose its own variance algorithm)."""
    return tl.bn_output(x, axis, y_ref, scale, eps, io_dtype=dtype, normalize_var=normalize_var, variance="one-pass")


def running(batches, axis: int, dtype: str, steps: int, state_scale: float) -> Tol:
    """Running statistics after `steps` updates against the oracle: the layer bound."""
    return tl.running_stats(batches, axis, stats_dtype=dtype, steps=steps, state_scale=state_scale)


def backward(x, dy, axis: int, dx_ref, scale, eps: float, dtype: str, running_mean=None,
             running_var=None) -> dict[str, Tol]:
    """Gradients of sum(y * dy) against the oracle (through the batch statistics, or through the running ones where
    they are given): the layer bound."""
    return tl.bn_backward(x, dy, axis, dx_ref, scale, eps, dtype=dtype, running_mean=running_mean,
                          running_var=running_var)


def jacobian_contraction(tols: dict[str, Tol], x, dy, axis: int, scale, eps: float, dtype: str) -> dict[str, Tol]:
    """Gradients read from a Jacobian contracted with dy (jacrev): each gradient element is a further sum over the
    n same-channel outputs, sum_j J_ji dy_j, with J_ji = gamma/sigma (delta_ij - 1/n - xhat_i xhat_j / n), so
    sum_j |J_ji| <= gamma/sigma (2 + max|xhat|^2); the sum adds n u max|dy| sum_j |J_ji| (tolerances.py's
    gamma_n). For dscale and doffset the Jacobian entries are xhat and 1 and the contraction is the reduction itself,
    so their bound adds n u sum|dy xhat| and n u sum|dy|."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    u = tl.roundoff(dtype)
    axes = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    n = int(np.prod([x.shape[a] for a in axes]))
    mu, var = x.mean(axis=axes), x.var(axis=axes)
    sigma = np.sqrt(var + eps)
    xhat = (x - mu.reshape(shape)) / sigma.reshape(shape)
    g = 1.0 if scale is None else float(np.max(np.abs(scale)))
    xm = float(np.max(np.abs(xhat)))
    extra = {"dx": n * u * float(np.max(np.abs(dy))) * g / float(np.min(sigma)) * (2 + xm * xm),
             "dscale": n * u * float(np.max(np.abs(dy * xhat).sum(axis=axes))),
             "doffset": n * u * float(np.max(np.abs(dy).sum(axis=axes)))}
    return {k: Tol(t.atol + extra[k], t.rtol, f"{t.why}; + Jacobian contraction n u sum|J dy| = {extra[k]:.3g}")
            for k, t in tols.items()}
