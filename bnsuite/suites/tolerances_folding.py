"""Tolerances of the folding lane: a folded model against the float64 oracle and against the eager model, and a
fake-quantized (QAT) path's output.

Folding. A float32 layer that reduces n products accumulates at most gamma_n = n*u/(1 - n*u) relative error of
sum |w||x| (u the unit roundoff); folding W' = W * gamma * rsqrt(var + eps) and b' = (b - mean) * k + beta adds a
few roundings per weight (rsqrt, two products, a difference and a sum: FOLD_ROUNDINGS), and the unfolded BatchNorm
the same few per output. Through a network the bounds add up layer by layer on the propagated magnitude |W'| |h|
(the oracle's `magnitude`), so one path's error is below u * sum over layers (n_l + FOLD_ROUNDINGS) * magnitude.
Folded against eager is the difference of two such results: twice the bound.

Quantization. A fake quantizer rounds to its step s (half a step of error), so a quantized conv-BN output is off by
at most s_in/2 * sum|W'| (the input's quantizer through the folded weights) + s_w/2 * sum|x| (each output channel's
weight quantizer through the input's receptive field) + s_out/2 (the output's quantizer), each term multiplied by
the output's gain (running_std / batch_std where the path rescales a running-statistics fold to batch statistics),
plus the float bound above; the quantizers of each layer add once per layer (the depth).
"""

from __future__ import annotations

import numpy as np

from bnsuite.suites.tolerances import Tol, roundoff

FOLD_ROUNDINGS = 8  # rsqrt (2 ulp), gamma * rsqrt, W * k, b - mean, (b - mean) * k, + beta, and the BN's own two


def gamma(n: int, dtype: str) -> float:
    u = roundoff(dtype)
    return n * u / (1.0 - n * u)


def folded(dtype: str, reductions: list[int], magnitude: float) -> Tol:
    """One float path (folded or eager) against the float64 oracle: sum over layers of gamma(n_l + FOLD_ROUNDINGS)
    on the propagated magnitude (the largest output's sum |W'| |h|)."""
    g = sum(gamma(n + FOLD_ROUNDINGS, dtype) for n in reductions)
    return Tol(atol=g * magnitude, rtol=0.0,
               why=f"{dtype} roundoff x (reductions {reductions} + {FOLD_ROUNDINGS} fold roundings each) x "
                   f"magnitude {magnitude:.3g}")


def folded_vs_eager(tol: Tol) -> Tol:
    """Two float results, each within `tol` of the oracle, differ by at most twice it."""
    return Tol(atol=2 * tol.atol, rtol=2 * tol.rtol, why=f"two results each within ({tol.why})")


def quantized(float_tol: Tol, *, step_in: float, step_weight: np.ndarray, step_out: float, weight_abs: np.ndarray,
              input_abs: float, gain: np.ndarray | float = 1.0, depth: int = 1) -> Tol:
    """A fake-quantized path against the oracle (see the module docstring); weight_abs: sum |W'| per output channel,
    input_abs: the largest sum |x| over a receptive field, gain: per output channel."""
    per_channel = (step_in / 2 * np.asarray(weight_abs) + np.asarray(step_weight) / 2 * input_abs) * gain
    q = depth * (float(np.max(per_channel)) + step_out / 2)
    return Tol(atol=float_tol.atol + q, rtol=0.0,
               why=f"quantization steps (input {step_in:.3g}, weight up to {np.max(step_weight):.3g}, output "
                   f"{step_out:.3g}) x depth {depth}, through sum|W'| and sum|x|, gain up to {np.max(gain):.3g}; "
                   f"plus {float_tol.why}")


def running_update(momentum: float, bn_input_tol: float, spread: float, dtype: str, n: int, scale: float) -> Tol:
    """Running statistics after one update from a BatchNorm input known within bn_input_tol: the batch mean moves by
    at most that much, the variance by 2 * spread * tol + tol^2 (times n/(n-1)); both are weighted by momentum; plus
    the float reduction of n values on the statistics' scale."""
    t = momentum * (bn_input_tol + (2 * spread * bn_input_tol + bn_input_tol ** 2) * n / (n - 1))
    return Tol(atol=t + gamma(n + 4, dtype) * scale, rtol=0.0,
               why=f"momentum {momentum} x (BN input within {bn_input_tol:.3g}, spread {spread:.3g}) + {dtype} "
                   f"reduction of {n}")
