"""The one home of numerical tolerances. Tests ask these functions; they never invent numbers.

Reasoning
---------
Let u be the unit roundoff of a dtype (2^-24 for float32). BatchNorm reduces n values per channel. We use the
classical worst-case bound for a recursive sum of n terms, |computed - exact| <= gamma_n * sum|x_i| with
gamma_n ~ n*u (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., section 4.2). Frameworks use pairwise
or blocked reductions whose errors are far smaller, so the bound is safe (tests never flake on a seed) while staying
orders of magnitude below every semantic difference this suite distinguishes: the smallest one is the Bessel factor
n/(n-1), a relative change of 1/(n-1) in the variance (about 1e-2 for our n ~ 100, against ~1e-5 for the float32
bound below). ``assert_separable`` checks that margin wherever a test classifies a behaviour.

* batch mean:      |dmu|      <= (n + 2) u_s max|x|
* batch variance:  |dvar|/var <= (n + 4) u_s kappa, kappa = 1 + max(mu^2 / var). The factor kappa covers frameworks
  that use the one-pass formula E[x^2] - E[x]^2 (Flax's default use_fast_variance, Keras' torch backend), whose error
  grows with mean^2/var (catastrophic cancellation); two-pass implementations have kappa effectively 1.
* normalized output y = (x - mu) / sqrt(var + eps) * gamma + beta:
      |dy| <= |gamma| (|dmu| / sigma + |xhat| |dvar| / (2 var)) + 4 u_o max|y|
  where u_s is the roundoff of the dtype the statistics are computed in and u_o that of the output dtype.
* running statistics after k steps: each step adds the batch-statistic error above plus 2 u_s for the
  exponential-moving-average arithmetic, so errors add linearly in k (the EMA weights sum to at most 1).
* depth d (stacked layers): errors compound at most linearly in d for normalized activations, so bounds scale by d.
"""

from __future__ import annotations

import dataclasses

import numpy as np

UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}


@dataclasses.dataclass(frozen=True)
class Tol:
    atol: float
    rtol: float
    why: str

    def allows(self, observed: np.ndarray, expected: np.ndarray) -> np.ndarray:
        return np.abs(observed - expected) <= self.atol + self.rtol * np.abs(expected)


def roundoff(dtype: str) -> float:
    try:
        return UNIT_ROUNDOFF[dtype]
    except KeyError:
        raise ValueError(f"no unit roundoff known for dtype {dtype!r}") from None


def _channel_stats(x: np.ndarray, axis: int):
    axes = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    mu = x.mean(axis=axes)
    var = x.var(axis=axes)
    return axes, mu, var


def conditioning(x: np.ndarray, axis: int) -> float:
    """kappa = 1 + max over channels of mean^2 / var (amplification of the one-pass variance formula)."""
    _, mu, var = _channel_stats(np.asarray(x, np.float64), axis)
    var = np.maximum(var, np.finfo(np.float64).tiny)
    return float(1.0 + np.max(mu * mu / var))


def batch_var_rel(stats_dtype: str, n: int, kappa: float) -> float:
    """Relative error bound of a computed batch variance."""
    return (n + 4) * roundoff(stats_dtype) * kappa


def bn_output(x: np.ndarray, axis: int, y_ref: np.ndarray, scale: np.ndarray | None, eps: float, *,
              io_dtype: str, stats_dtype: str | None = None, normalize_var: np.ndarray | None = None,
              depth: int = 1) -> Tol:
    """Tolerance for a BatchNorm output against the float64 oracle.

    `normalize_var` is the variance the layer normalizes with (batch variance in training mode, running variance in
    inference mode); with running statistics only the per-element arithmetic contributes.
    """
    x = np.asarray(x, np.float64)
    stats_dtype = stats_dtype or io_dtype
    u_s, u_o = roundoff(stats_dtype), roundoff(io_dtype)
    axes, mu, var = _channel_stats(x, axis)
    n = int(np.prod([x.shape[a] for a in axes]))
    g = 1.0 if scale is None else float(np.max(np.abs(scale)))
    y_max = float(np.max(np.abs(y_ref))) if y_ref.size else 0.0
    if normalize_var is None:  # batch statistics: reduction errors dominate
        sigma = np.sqrt(var + eps)
        xhat_max = float(np.max(np.abs((x - mu.reshape(_shape(x, axis))) / sigma.reshape(_shape(x, axis)))))
        dmu_over_sigma = float(np.max((n + 2) * u_s * np.max(np.abs(x)) / sigma))
        dvar_rel = batch_var_rel(stats_dtype, n, conditioning(x, axis))
        atol = g * (dmu_over_sigma + xhat_max * dvar_rel / 2) + 4 * u_o * y_max
        why = (f"batch stats: n={n}, u_stats={u_s:.2g}, kappa={conditioning(x, axis):.3g}; "
               f"(n+2)u max|x|/sigma + |xhat|(n+4)u kappa/2, + 4 u_out max|y|")
    else:  # running statistics: a fixed per-channel affine map, a few roundings per element
        atol = 8 * u_s * (g * float(np.max(np.abs(x))) / float(np.sqrt(np.min(normalize_var) + eps)) + y_max) \
            + 4 * u_o * y_max
        why = f"running stats: 8 u_stats per-element ops, u_stats={u_s:.2g}, + 4 u_out max|y|"
    return Tol(atol=depth * atol, rtol=0.0, why=why + (f", depth={depth}" if depth > 1 else ""))


def _shape(x: np.ndarray, axis: int) -> list[int]:
    s = [1] * x.ndim
    s[axis % x.ndim] = -1
    return s


def running_stats(batches: list[np.ndarray], axis: int, *, stats_dtype: str, steps: int, state_scale: float) -> Tol:
    """Tolerance for running mean / variance after `steps` updates with the given batches."""
    u = roundoff(stats_dtype)
    worst = 0.0
    for xb in batches:
        xb = np.asarray(xb, np.float64)
        axes, mu, var = _channel_stats(xb, axis)
        n = int(np.prod([xb.shape[a] for a in axes]))
        kappa = conditioning(xb, axis)
        worst = max(worst, (n + 2) * u * float(np.max(np.abs(xb))),
                    batch_var_rel(stats_dtype, n, kappa) * float(np.max(var)) * n / max(n - 1, 1))
    atol = steps * (worst + 2 * u * state_scale)
    return Tol(atol=atol, rtol=steps * 4 * u,
               why=f"{steps} EMA steps x (batch-statistic bound + 2u EMA rounding), u={u:.2g}")


def assert_separable(tol_rel: float, effect_rel: float, what: str) -> None:
    """Fail loudly if a tolerance could hide the semantic difference a test is meant to detect."""
    if not tol_rel * 10 < effect_rel:
        raise AssertionError(f"tolerance {tol_rel:.3g} is too loose to tell {what} (effect {effect_rel:.3g}); "
                             "use a larger or better-conditioned test batch")


def degenerate_output(x: np.ndarray, scale: np.ndarray | None, offset: np.ndarray | None, eps: float,
                      dtype: str) -> Tol:
    """Output of a batch with ONE value per channel: exactly the offset in exact arithmetic (x - mean = 0, var = 0).

    Implementations that fold the mean into the offset (y = x * inv + (offset - mean * inv), inv = scale/sqrt(eps))
    cancel two products of size |x| * |scale| / sqrt(eps) each, so a few roundings of that size remain.
    """
    u = roundoff(dtype)
    g = 1.0 if scale is None else float(np.max(np.abs(scale)))
    b = 0.0 if offset is None else float(np.max(np.abs(offset)))
    big = float(np.max(np.abs(x))) * g / np.sqrt(eps)
    return Tol(atol=8 * u * (big + b), rtol=0.0,
               why=f"var=0: 8 u (|x| |scale| / sqrt(eps) + |offset|), u={u:.2g}, |x||scale|/sqrt(eps)={big:.3g}")
