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


def quantized_layers(float_tol: Tol, layers: list[dict]) -> Tol:
    """An int8 chain of layers against the float64 oracle (clipped where the quantizers saturate). Each layer:
    step_in (its input quantizer), weight_abs (sum |W| per output, of the folded weights), step_weight (per output),
    input_abs (the largest sum |x| over one output's inputs), n (that reduction's size), step_out (its output
    quantizer). The error e reaching a layer grows by its input's half step; products (x + dx)(w + dw) - xw are within
    |w| |dx| + |dw| |x + dx|, so per output sum|W| e + s_w/2 (sum|x| + n e); the int32 bias rounds to s_in s_w / 2;
    the output quantizer adds half its step. relu, a mean and a saturation at a quantizer's range do not increase an
    error, so the error leaving the last layer bounds the output's."""
    err, why = 0.0, []
    for layer in layers:
        err = float(np.max(layer_error(err, **layer)))  # a weight_err entry counts weights clipped at their range
        step_w = np.asarray(layer["step_weight"], np.float64)
        why.append(f"(in {layer['step_in']:.3g}, weight up to {np.max(step_w):.3g}, out {layer['step_out']:.3g})")
    return Tol(atol=float_tol.atol + err, rtol=0.0,
               why=f"int8 steps per layer {' -> '.join(why)} through sum|W'| and sum|x|; plus {float_tol.why}")


def layer_error(err: float, *, step_in: float, weight_abs, step_weight, input_abs: float, n: int,
                step_out: float, weight_err=None) -> np.ndarray:
    """Per output: the error leaving one quantized layer whose input arrives within err (see quantized_layers);
    weight_err: each output's largest weight error where it exceeds half a step (a weight clipped at the quantizer's
    range), else half its step."""
    e_in = err + step_in / 2
    step_w = np.asarray(step_weight, np.float64)
    w_err = step_w / 2 if weight_err is None else np.asarray(weight_err, np.float64)
    return (np.asarray(weight_abs, np.float64) * e_in + w_err * (input_abs + n * e_in) + step_in * step_w / 2
            + step_out / 2)


def weight_clip(weights: np.ndarray, step_weight, qrange: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The weights a per-output-channel quantizer can hold (clipped to qrange x its step, as it saturates) and each
    output's weight error bound: half a step plus the most it clipped away."""
    w = np.asarray(weights, np.float64)
    step = np.asarray(step_weight, np.float64).reshape(-1, *([1] * (w.ndim - 1)))
    clipped = np.clip(w, qrange[0] * step, qrange[1] * step)
    excess = np.abs(w - clipped).reshape(w.shape[0], -1).max(axis=1)
    return clipped, step.reshape(-1) / 2 + excess


def running_update_per_channel(momentum: float, bn_input_err: np.ndarray, std: np.ndarray, dtype: str, n: int,
                               scale: float) -> Tol:
    """Running (mean, var) after one update, per channel, from a BatchNorm input known within bn_input_err[c]: the
    batch mean moves by at most that; the biased variance by 2 cov(z, e) + var(e) <= 2 std(z) err + err^2
    (Cauchy-Schwarz), times n/(n-1) for the unbiased one; both weighted by momentum; plus the float reduction of n
    values on the statistics' scale. atol is per element of concatenate([mean, var])."""
    e = np.asarray(bn_input_err, np.float64)
    roundoff_part = gamma(n + 4, dtype) * scale
    atol = momentum * np.concatenate([e, (2 * np.asarray(std) * e + e ** 2) * n / (n - 1)]) + roundoff_part
    return Tol(atol=atol, rtol=0.0,
               why=f"momentum {momentum} x (BN input within up to {np.max(e):.3g} per channel, std up to "
                   f"{np.max(std):.3g}) + {dtype} reduction of {n}")


def int8_weights(step_weight: np.ndarray, folded: np.ndarray, dtype: str = "float32") -> Tol:
    """Converted int8 weights against the oracle's folded ones: half the per-output-channel step of the weight
    quantizer (the largest channel's), plus the fold's float roundings on the largest |W'|."""
    step = float(np.max(step_weight))
    return Tol(atol=step / 2 + gamma(FOLD_ROUNDINGS, dtype) * float(np.max(np.abs(folded))), rtol=0.0,
               why=f"half the weight step (up to {step:.3g}) + {FOLD_ROUNDINGS} {dtype} fold roundings")


def folded_bias(bias_terms_abs: np.ndarray, dtype: str = "float32") -> Tol:
    """A folded bias kept in float: (b - mean) * k + beta rounds FOLD_ROUNDINGS times on the magnitude of its terms
    (|b - mean| k + |beta|, bias_terms_abs; the largest)."""
    return Tol(atol=gamma(FOLD_ROUNDINGS, dtype) * float(np.max(bias_terms_abs)), rtol=0.0,
               why=f"{FOLD_ROUNDINGS} {dtype} fold roundings on |b - mean| k + |beta|")
