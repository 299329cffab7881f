"""The tolerances of one BatchNorm layer, and the helpers every other tolerance builds on (the reasoning is the
package docstring's, bnsuite/suites/tolerances/__init__.py)."""

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
    """kappa = 1 + max over channels of mean^2 / var (amplification of the one-pass variance formula).

    The one function computing kappa: the layer bounds here and the network bounds (tolerances/network.py) ask it."""
    _, mu, var = _channel_stats(np.asarray(x, np.float64), axis)
    sq = mu * mu
    # mean^2 / var where it is finite; a constant channel (var 0) with a non-zero mean amplifies without bound
    ratio = np.divide(sq, var, out=np.full_like(sq, np.inf), where=var > sq / np.finfo(np.float64).max)
    ratio[sq == 0] = 0.0
    return float(1.0 + np.max(ratio))


def batch_var_rel(stats_dtype: str, n: int, kappa: float) -> float:
    """Relative error bound of a computed batch variance."""
    return (n + 4) * roundoff(stats_dtype) * kappa


def bn_output(x: np.ndarray, axis: int, y_ref: np.ndarray, scale: np.ndarray | None, eps: float, *,
              io_dtype: str, stats_dtype: str | None = None, normalize_var: np.ndarray | None = None,
              depth: int = 1, variance: str = "one-pass") -> Tol:
    """Tolerance for a BatchNorm output against the float64 oracle.

    `normalize_var` is the variance the layer normalizes with (batch variance in training mode, running variance in
    inference mode); with running statistics only the per-element arithmetic contributes.

    `variance` is how the implementation computes the batch variance. "one-pass" (E[x^2] - E[x]^2, the safe default
    for any implementation) loses a factor kappa = 1 + mean^2/var of relative accuracy. "two-pass" (mean((x - mean)^2))
    only feels the mean's own error dmu: var_computed = var + dmu^2 + O((n+4) u var), so its relative error is
    (n+4) u + (dmu/sigma)^2, independent of kappa; a declared two-pass algorithm is held to that tighter bound.
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
        if variance == "two-pass":
            dvar_rel = (n + 4) * u_s + dmu_over_sigma ** 2
            var_why = "(n+4)u + (dmu/sigma)^2 [two-pass]"
        else:
            dvar_rel = batch_var_rel(stats_dtype, n, conditioning(x, axis))
            var_why = f"(n+4)u kappa, kappa={conditioning(x, axis):.3g} [one-pass]"
        atol = g * (dmu_over_sigma + xhat_max * dvar_rel / 2) + 4 * u_o * y_max
        if dvar_rel >= 1:
            # No correct digit of the variance is left: the computed variance may be anywhere in
            # [0, var (1 + dvar_rel)], so the only bound is the one for variance 0: |y| <= |gamma| |x - mu| / sqrt(eps).
            spread = float(np.max(np.abs(x - mu.reshape(_shape(x, axis)))))
            atol = g * spread * (1 + dmu_over_sigma) / np.sqrt(eps) + y_max + 4 * u_o * y_max
            var_why += " >= 1: no digit of the variance left, bound of a zero variance"
        why = (f"batch stats: n={n}, u_stats={u_s:.2g}; (n+2)u max|x|/sigma + |xhat| dvar_rel/2 with dvar_rel = "
               f"{var_why}, + 4 u_out max|y|")
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


def bn_backward(x: np.ndarray, dy: np.ndarray, axis: int, dx_ref: np.ndarray, scale: np.ndarray | None, eps: float,
                *, dtype: str, stats_dtype: str | None = None,
                running_mean: np.ndarray | None = None, running_var: np.ndarray | None = None) -> dict[str, Tol]:
    """Tolerances for the gradients of sum(y * dy) against the float64 oracle: {"dx", "dscale", "doffset"}.

    Training mode when `running_var` is None (xhat from the batch statistics), else inference mode with the given
    running statistics.

    Derivation (u = unit roundoff of `stats_dtype`, n values per channel, gamma_n ~ n u as in the module docstring):

    * doffset = sum(dy) is one reduction:       |err| <= n u sum|dy|
    * dscale = sum(dy * xhat) is one reduction of products whose factor xhat carries the forward error
      e_xhat = |dmu| / sigma + |xhat| |dvar| / (2 var) (the terms of `bn_output` with gamma = 1; zero in inference
      mode, where xhat is a per-element affine map of x with a few roundings, 4 u |xhat|):
                                                |err| <= sum|dy| e_xhat + (n + 4) u sum|dy * xhat|
    * training dx = gamma / (n sigma) * (n dy - doffset - xhat * dscale): the two reductions enter divided by n, so
                                                |err| <= gamma/sigma * (err(doffset) / n + |xhat| err(dscale) / n
                                                                        + |dscale| / n * e_xhat)
                                                         + (|dvar| / (2 var) + 8 u) |dx|
      (the last term: 1/sigma and the final products rounded). |dscale| / n <= max|dy| max|xhat| bounds the middle
      factor. The bound is the forward one (first order in the reduction errors), applied twice: the backward pass
      "involves two reductions", doffset and dscale, both of which re-enter every dx element.
    * inference dx = dy * gamma / sqrt(running_var + eps) is per-element:  |err| <= 8 u |dx|

    Against the semantic difference the gradient suite detects (dropping the two reduction terms in training mode
    changes dx by O(|dy|) per element), these bounds are ~1e-3 relative for float32 and n ~ 100; test_gradients
    calls `assert_separable` on that margin.
    """
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    stats_dtype = stats_dtype or dtype
    u = roundoff(stats_dtype)
    axes, mu, var = _channel_stats(x, axis)
    n = int(np.prod([x.shape[a] for a in axes]))
    g = 1.0 if scale is None else float(np.max(np.abs(scale)))
    shp = _shape(x, axis)
    training = running_var is None
    if training:
        sigma = np.sqrt(var + eps)
        xhat = (x - mu.reshape(shp)) / sigma.reshape(shp)
        dvar_rel = batch_var_rel(stats_dtype, n, conditioning(x, axis))
        e_xhat = float(np.max((n + 2) * u * np.max(np.abs(x)) / sigma)) + float(np.max(np.abs(xhat))) * dvar_rel / 2
    else:
        sigma = np.sqrt(np.asarray(running_var, np.float64) + eps)
        rm = np.zeros_like(sigma) if running_mean is None else np.asarray(running_mean, np.float64)
        xhat = (x - rm.reshape(shp)) / sigma.reshape(shp)
        dvar_rel = 0.0
        e_xhat = 4 * u * float(np.max(np.abs(xhat)))
    sum_abs_dy = float(np.max(np.abs(dy).sum(axis=axes)))
    sum_abs_dyx = float(np.max(np.abs(dy * xhat).sum(axis=axes)))
    err_off = n * u * sum_abs_dy
    err_scale = sum_abs_dy * e_xhat + (n + 4) * u * sum_abs_dyx
    dx_max = float(np.max(np.abs(dx_ref))) if np.size(dx_ref) else 0.0
    xhat_max = float(np.max(np.abs(xhat)))
    if training:
        dscale_over_n = float(np.max(np.abs(dy))) * xhat_max
        err_dx = g / float(np.min(sigma)) * (err_off / n + xhat_max * err_scale / n + dscale_over_n * e_xhat) \
            + (dvar_rel / 2 + 8 * u) * dx_max
        why = (f"backward through batch stats: n={n}, u={u:.2g}; reductions doffset (n u sum|dy|) and dscale "
               f"(sum|dy| e_xhat + (n+4) u sum|dy xhat|) re-enter dx divided by n")
    else:
        err_dx = 8 * u * dx_max
        why = f"inference backward: per-element affine map, 8 u |dx|, reductions (n+4) u sum, u={u:.2g}"
    return {"dx": Tol(err_dx, 0.0, why), "dscale": Tol(err_scale, 0.0, why), "doffset": Tol(err_off, 0.0, why)}


# -- batch-size sweeps (suites/test_batch_size.py) ------------------------------------------------------------

# Standard errors allowed between a sampling statistic and its expectation. The statistics below are weighted sums of
# >= 40 effectively independent batch variances over several independent channels, so they are close to normal;
# a two-sided normal tail beyond 5 sigma has probability 6e-7, and the data are seeded, so the check is deterministic
# and cannot flake while still catching an estimator that is off by a factor n/(n-1) at small n.
STAT_Z = 5.0


def two_results_of_one_exact_value(tol_vs_exact: Tol, what: str) -> Tol:
    """Two computed results whose exact values are equal (so the exact deviation is 0), each within `tol_vs_exact`
    of it: by the triangle inequality they differ by at most twice that bound."""
    return Tol(atol=2 * tol_vs_exact.atol, rtol=2 * tol_vs_exact.rtol,
               why=f"{what} (exact deviation 0); two results each within the bound -> 2x ({tol_vs_exact.why})")


def inference_invariance(tol_vs_exact: Tol) -> Tol:
    """Tolerance for |y(batch size b) - y(full batch)| in inference mode.

    Inference BatchNorm is a fixed per-channel affine map y = (x - mean) / sqrt(var + eps) * scale + offset: every
    output element depends on its own input element and the state only, so in exact arithmetic the output of a sample
    cannot depend on the batch it travels in, and the deviation is 0. A framework may still pick a different kernel
    per batch size (vectorized body vs scalar tail, FMA or not, the mean folded into the offset or not), so each of
    the two computed outputs is only within the per-element rounding bound of the exact value:
    ``bn_output(..., normalize_var=running var)`` = 8 u_stats (|scale| max|x| / sqrt(min var + eps) + max|y|)
    + 4 u_out max|y| (a few roundings per element, u = unit roundoff of the dtype). By the triangle inequality
    the two computed outputs differ by at most twice that bound. No reduction is involved, so the bound does not grow
    with the batch size.
    """
    return two_results_of_one_exact_value(tol_vs_exact, "inference is a per-element affine map")


def difference_of_outputs(tol_a: Tol, tol_b: Tol) -> Tol:
    """Tolerance for (y_a - y_b) against the oracle's (ref_a - ref_b): each output is within its own bound of its
    oracle value, so the difference is within the sum of the two bounds (triangle inequality)."""
    return Tol(atol=tol_a.atol + tol_b.atol, rtol=0.0,
                  why=f"difference of two outputs: sum of their bounds ({tol_a.why})")


def pooled_statistics_tol(mean_tol: Tol, var_tol: Tol, means: list[np.ndarray], n: int,
                          estimator: str) -> tuple[Tol, Tol]:
    """Tolerances of pooled_statistics computed (in float64) from per-batch statistics read from a framework.

    Each per-batch mean has error <= dm = mean_tol bound and each per-batch variance <= dv = var_tol bound (one
    update with momentum 1, ``running_stats(steps=1)``). Averaging in float64 does not grow an error bound. An
    unbiased estimate is converted to biased by the factor (n-1)/n <= 1. In var = mean(v_k) + mean(m_k^2) - M^2,
    d(m_k^2) <= 2 |m_k| dm (+ dm^2) and d(M^2) <= 2 |M| dm (+ dm^2), so
    |d var| <= dv + 4 max|m_k| dm + 2 dm^2.
    """
    mmax = float(np.max(np.abs(np.stack(means))))
    dm = mean_tol.atol + mean_tol.rtol * mmax
    # mean_k(v_k) <= pooled var, so rtol * |v_k| averaged is at most rtol * pooled var: keep rtol on the result.
    dv = var_tol.atol
    return (Tol(atol=dm, rtol=0.0, why=f"mean of per-batch means, each within {dm:.3g} ({mean_tol.why})"),
            Tol(atol=dv + 4 * mmax * dm + 2 * dm * dm, rtol=var_tol.rtol,
                   why=f"law of total variance from per-batch stats: dv + 4 max|m| dm + 2 dm^2 "
                       f"(dv={dv:.3g}, dm={dm:.3g}, max|m|={mmax:.3g}; {var_tol.why})"))


# -- bounds and thresholds of classifications and comparisons ------------------------------------------------------

def exact(why: str) -> Tol:
    """No difference at all: the value must be bit-for-bit the one before (state a call must not touch)."""
    return Tol(0.0, 0.0, f"exact: {why}")


def momentum_weight(dtype: str) -> Tol:
    """Tolerance for the weight w = (mean_after - mean_before) / (batch_mean - mean_before) one training step gave
    the new batch mean, compared with the declared momentum m and with 1 - m.

    w is a ratio of two O(1) differences of values stored in `dtype` (seeded state and data: |batch_mean -
    mean_before| is O(0.1 to 1)); each difference is within a few roundings (2 u for the EMA arithmetic, (n + 2) u
    max|x| for the batch mean with n <= 120 values) of exact, so w is within a few hundred u of exact. 1e3 u
    (6e-5 in float32) covers that with margin and stays 1e4 times below the gap the test tells apart,
    |m - (1 - m)| >= 0.8 for every framework's default momentum (0.1, 0.99). rtol 1e-5 as numpy.allclose.
    """
    return Tol(1e3 * roundoff(dtype), 1e-5, f"a ratio of two O(1) differences: 1e3 u, u={roundoff(dtype):.2g}")


# Floor of the tolerance that classifies an output as "training" (batch statistics) or "inference" (running
# statistics) when `training` is left out of the call. The two candidates differ by O(1) on the seeded data (running
# statistics != batch statistics by construction), so any bound far below O(1) classifies the same; the floor keeps
# the classification independent of how tight bn_output's derived bound is for a kernel the default-mode call may
# pick, and at 1e-4 it is still 1e3 times below the gap.
MODE_CLASSIFICATION_FLOOR = 1e-4


def mode_classification(tol: Tol) -> Tol:
    """bn_output's bound with the MODE_CLASSIFICATION_FLOOR under it (see there)."""
    return Tol(max(tol.atol, MODE_CLASSIFICATION_FLOOR), 0, tol.why)


def hyperparameter_round_trip() -> Tol:
    """A hyperparameter read back from a built layer (momentum converted as 1 - m): the conversion in float64 loses
    ~1e-16 absolute (atol 1e-12), and a framework that stores the value in float32 rounds it once, a relative
    2^-24 = 6e-8 (rtol 1e-7)."""
    return Tol(1e-12, 1e-7, "a float round trip: float64 1 - m, or one float32 rounding")


# A deviation between batch sizes that shows an output DEPENDS on the batch (an effect threshold, not an error
# bound): normalizing with one sample's statistics instead of the whole batch's moves the seeded outputs (channel
# std 0.5 to 2, |scale| >= 0.5) by O(1), while every rounding bound is below 1e-4 in float32; 0.1 sits between.
BATCH_DEPENDENCE_EFFECT = 0.1
