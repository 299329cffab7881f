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
    return Tol(atol=2 * tol_vs_exact.atol, rtol=2 * tol_vs_exact.rtol,
                  why="inference is a per-element affine map (exact deviation 0); two outputs each within the "
                      f"per-element bound -> 2x ({tol_vs_exact.why})")


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


# -- whole networks (adapters/nets, suites/test_network_equivalence.py, suites/test_deep_batch_size.py) ----------
"""Tolerances for whole networks (adapters/nets) against the float64 reference network. 

Derivation
----------
Notation as in suites/tolerances.py: u = unit roundoff of the dtype, n = length of a reduction. A layer that sums n
products computes the exact result of relatively perturbed inputs (|perturbation| <= gamma_n ~ n u, Higham 2nd ed.
section 3.1), so its absolute error is at most (n + c) u times the sum of the ABSOLUTE products, |W| |x| (+|b|),
not the (possibly cancelling) result. The reference network propagates these absolute magnitudes through the same
graph (``Layer.y_abs``; for the backward ``ReferenceNet.grads_abs``), and every bound below is a relative error rho
times such a magnitude.

* Forward, relative error of the output (to first order, layer errors add):
      rho_f = u * G_f * sum_l c_l,   c_l = n_l + 4 (conv: n = C_in k^2 + 1, dense: C_in + 1, pooling: H W),
                                           c_l = (n_l + 4) kappa_l for a training-mode BN (n_l = values per
                                           channel, kappa_l = 1 + max mean^2/var: one-pass variance, see
                                           tolerances.batch_var_rel), c_l = 8 for an inference-mode BN (a fixed
                                           per-channel affine map, tolerances.bn_output),
  G_f = prod over training-mode BN of (2 + max|xhat|). That gain is the BN forward's sensitivity: an input error e
  moves the mean by <= e, sigma by <= e, so the output by <= |gamma| e (2 + |xhat|) / sigma; |gamma| |xhat| is the
  output's magnitude, so relative errors grow by at most (2 + max|xhat|) per training-mode BN. Inference-mode BN is a
  linear map and costs nothing beyond its rounding. This bounds errors growing linearly with depth for the deep
  network (21 inference BNs), the assumption suites/tolerances.py states for stacked normalized layers.
* Loss L = mean((y - t)^2):  |dL| <= 2 max|y - t| e_y + (N + 4) u L, e_y = rho_f max(y_abs).
* Gradient of a parameter: the backward adds its own reductions (conv/dense: batch N H W for the weight gradient
  plus C_out k^2 for the input gradient; BN backward: n, with gain 2 + max|xhat|^2 from
  dx = gamma/sigma (dy - mean(dy) - xhat mean(dy xhat))) and sees the forward's errors through its inputs:
      rho_b = G_b (rho_f + u sum_l c'_l),   G_b = prod over training BN of (2 + max|xhat|^2);
  tolerance rho_b * max|grad_abs(P)|.
* k-th SGD step: earlier steps leave weights off by their own bound, which enters step k like one more step's
  rounding, so the relative bounds of step k are k times those of one step (linear in k, as
  tolerances.running_stats assumes for EMA steps). A weight after K steps: sum_k (k lr rho_b(k) max|grad_abs(k)|
  + 2 u (max|P| + lr max|grad|)).
* Running statistics of a BN whose input carries e_x(k) = k rho_in max(x_abs) at step k (rho_in = rho_f of the layers
  before it): mean moves by m (e_x + (n + 2) u max|x|), variance by m (2 e_x mean|x - mu| + (n + 4) u kappa var)
  n/(n - 1), each step adds 2 u max|state| for the EMA arithmetic; (1 - m) <= 1 keeps earlier errors.
* Deep inference networks (``output_linear_in_depth``): the |W||x| magnitudes propagated from the INPUT grow
  geometrically through a deep stack (every conv and BN multiplies them), which makes the bound above vacuous for
  21 layers. There we use the assumption suites/tolerances.py states for stacked normalized layers, that errors
  compound at most linearly in depth: layer l adds a relative error rho_l = c_l u max(local_abs_l) / max|y_l|, with
  local_abs_l its own |W| |x_l| + |b| on its ACTUAL input (BN inference: |gamma| (|x| + |mean|) / sqrt(var + eps) +
  |beta|), and relative errors pass on with gain 1:  tolerance = sum_l rho_l * max|y|.
* Output of the same inference network at two batch sizes: each is within the bound of the exact output, so they
  differ by at most twice the bound (exactly 0 in exact arithmetic).
"""
def _c_fwd(lay, u_unused=None) -> float:
    kind = lay.op[0]
    if kind in ("conv", "dense", "gap"):
        return lay.n + 4.0
    if kind == "bn":
        if lay.n == 0:  # inference mode
            return 8.0
        x = lay.x
        mu = x.mean(axis=(0, 2, 3))
        var = np.maximum(x.var(axis=(0, 2, 3)), np.finfo(np.float64).tiny)
        kappa = float(1.0 + np.max(mu * mu / var))
        return (lay.n + 4.0) * kappa
    return 0.0


def _c_bwd(lay) -> float:
    kind = lay.op[0]
    if kind in ("conv", "dense"):
        x = lay.x
        batch = x.shape[0] * (x.shape[2] * x.shape[3] if x.ndim == 4 else 1)
        fan_out = lay.op[3] * (lay.op[4] ** 2 if kind == "conv" else 1)
        return batch + fan_out + 8.0
    if kind == "bn":
        return lay.n + 8.0
    if kind == "gap":
        return 4.0
    return 0.0


def net_forward_rel(layers, dtype: str) -> float:
    """rho_f of the given layers (see the module docstring)."""
    gain = float(np.prod([lay.gain for lay in layers if lay.op[0] == "bn" and lay.n > 0] or [1.0]))
    return roundoff(dtype) * gain * sum(_c_fwd(lay) for lay in layers)


def net_backward_rel(layers, dtype: str) -> float:
    gain = float(np.prod([2.0 + lay.xhat_max ** 2 for lay in layers if lay.op[0] == "bn" and lay.n > 0] or [1.0]))
    return gain * (net_forward_rel(layers, dtype) + roundoff(dtype) * sum(_c_bwd(lay) for lay in layers))


def net_output(layers, dtype: str, *, steps_before: int = 0) -> Tol:
    """Network output of the last reference forward pass (`layers`), after `steps_before` SGD steps."""
    rho = (1 + steps_before) * net_forward_rel(layers, dtype)
    y_abs = float(np.max(layers[-1].y_abs))
    depth = sum(1 for lay in layers if lay.op[0] in ("conv", "dense", "bn"))
    return Tol(atol=rho * y_abs, rtol=0.0,
               why=f"forward bound rho_f={rho:.3g} x max|y|_abs={y_abs:.3g} ({depth} conv/dense/BN layers, "
                   f"{steps_before} earlier steps; suites/tolerances.py, networks)")


def net_output_linear_in_depth(net, dtype: str) -> Tol:
    """Output of the last reference forward pass in INFERENCE mode, errors linear in depth (module docstring)."""
    u = roundoff(dtype)
    rho = 0.0
    layers = net.layers
    for lay in layers:
        kind, c = lay.op[0], _c_fwd(lay)
        if c == 0.0:
            continue
        x = np.abs(lay.x)
        if kind == "conv":
            from bnsuite.adapters.nets.reference_net import conv2d

            local = conv2d(x, np.abs(net.w[f"{lay.op[1]}.kernel"]), np.abs(net.w[f"{lay.op[1]}.bias"]))
        elif kind == "dense":
            local = x @ np.abs(net.w[f"{lay.op[1]}.kernel"]).T + np.abs(net.w[f"{lay.op[1]}.bias"])
        elif kind == "bn":
            rs = lambda v: v.reshape(1, -1, 1, 1)
            name = lay.op[1]
            local = (rs(np.abs(net.w[f"{name}.scale"]) / np.sqrt(net.w[f"{name}.var"] + net.eps))
                     * (x + rs(np.abs(net.w[f"{name}.mean"]))) + rs(np.abs(net.w[f"{name}.offset"])))
        else:  # pooling
            local = x
        rho += c * u * float(np.max(local)) / max(float(np.max(np.abs(lay.y))), np.finfo(np.float64).tiny)
    y_max = float(np.max(np.abs(layers[-1].y)))
    n = sum(1 for lay in layers if _c_fwd(lay) > 0)
    return Tol(atol=rho * y_max, rtol=0.0,
               why=f"linear in depth: sum over {n} layers of c_l u max|local|/max|y_l| = {rho:.3g}, x max|y| "
                   f"{y_max:.3g} (suites/tolerances.py, networks)")


def net_same_network_two_batch_sizes(tol_exact: Tol) -> Tol:
    return Tol(atol=2 * tol_exact.atol, rtol=0.0, why="2 x (" + tol_exact.why + ")")


@dataclasses.dataclass
class NetTrainingBounds:
    """Accumulates the bounds of a sequence of SGD steps of the reference network (call `after_step` after each
    ReferenceNet.sgd_step)."""

    dtype: str
    lr: float
    momentum: float
    estimator: str
    steps: int = 0
    loss_tols: list = dataclasses.field(default_factory=list)
    param_err: dict = dataclasses.field(default_factory=dict)
    stat_err: dict = dataclasses.field(default_factory=dict)

    def after_step(self, net, loss: float, target) -> None:
        u = roundoff(self.dtype)
        self.steps += 1
        k = self.steps
        layers = net.layers
        rho_f = k * net_forward_rel(layers, self.dtype)
        y = layers[-1].y
        e_y = rho_f * float(np.max(layers[-1].y_abs))
        t = np.asarray(target, np.float64)
        self.loss_tols.append(Tol(
            atol=2 * float(np.max(np.abs(y - t))) * e_y + (y.size + 4) * u * loss, rtol=0.0,
            why=f"step {k}: 2 max|y-t| e_y + (N+4) u L, e_y = {e_y:.3g} (rho_f={rho_f:.3g})"))
        rho_b = k * net_backward_rel(layers, self.dtype)
        for name, g_abs in net.grads_abs.items():
            p = net.w[name]
            g = net.grads[name]
            e = self.lr * rho_b * float(np.max(g_abs)) + 2 * u * (float(np.max(np.abs(p))) + self.lr * float(
                np.max(np.abs(g))))
            self.param_err[name] = self.param_err.get(name, 0.0) + e
        m = self.momentum
        for i, lay in enumerate(layers):
            if lay.op[0] != "bn" or lay.n == 0:
                continue
            name, x, n = lay.op[1], lay.x, lay.n
            e_x = k * net_forward_rel(layers[:i], self.dtype) * float(np.max(lay.x_abs))
            mu = x.mean(axis=(0, 2, 3), keepdims=True)
            var = x.var(axis=(0, 2, 3))
            kappa = float(1.0 + np.max(mu.ravel() ** 2 / np.maximum(var, np.finfo(np.float64).tiny)))
            bessel = n / (n - 1) if self.estimator == "unbiased" else 1.0
            e_mean = m * (e_x + (n + 2) * u * float(np.max(np.abs(x)))) + 2 * u * float(np.max(np.abs(
                net.w[f"{name}.mean"])))
            e_var = m * bessel * (2 * e_x * float(np.max(np.abs(x - mu).mean(axis=(0, 2, 3))))
                                  + (n + 4) * u * kappa * float(np.max(var))) + 2 * u * float(np.max(net.w[f"{name}.var"]))
            self.stat_err[f"{name}.mean"] = self.stat_err.get(f"{name}.mean", 0.0) + e_mean
            self.stat_err[f"{name}.var"] = self.stat_err.get(f"{name}.var", 0.0) + e_var

    def loss(self, step: int) -> Tol:
        return self.loss_tols[step - 1]

    def weight(self, name: str) -> Tol:
        if name in self.param_err:
            return Tol(self.param_err[name], 0.0, f"{self.steps} SGD steps: sum_k k lr rho_b(k) max|grad_abs| + "
                                                  "2u(max|P| + lr max|g|) (suites/tolerances.py, networks)")
        return Tol(self.stat_err[name], 0.0, f"{self.steps} EMA steps, m={self.momentum}: "
                                             "m (e_x + reduction bound) + 2u max|state| per step "
                                             "(suites/tolerances.py, networks)")


# -- batch-independent normalization layers (LayerNorm, GroupNorm, InstanceNorm, RMSNorm) -----------------------------
def norm_output(rows: np.ndarray, y_ref: np.ndarray, scale: np.ndarray | None, eps: float, *, io_dtype: str,
                stats_dtype: str | None = None, variance: str = "one-pass") -> Tol:
    """Tolerance for a per-sample normalization's output against the float64 oracle.

    `rows` holds the sets of values the layer reduces, one per row (n values each): a LayerNorm row is one sample's
    features, a GroupNorm row one (sample, group). Each row is a BatchNorm-like normalization of n values, so the
    module's BatchNorm reasoning applies row by row: |dmu| <= (n + 2) u_s max|row|; the variance's relative error is
    (n + 4) u_s + (dmu/sigma)^2 for a "two-pass" (or Welford) variance and (n + 4) u_s kappa, kappa = 1 + max(mu^2 /
    var), for the "one-pass" E[x^2] - E[x]^2; |dy| <= |gamma| (|dmu| / sigma + |xhat| |dvar| / (2 var)) + 4 u_o
    max|y|. "mean-square" (RMSNorm) sums n squares without cancellation: relative error (n + 4) u_s, no mean term.
    """
    rows = np.asarray(rows, np.float64)
    stats_dtype = stats_dtype or io_dtype
    u_s, u_o = roundoff(stats_dtype), roundoff(io_dtype)
    n = rows.shape[1]
    g = 1.0 if scale is None else float(np.max(np.abs(scale)))
    y_max = float(np.max(np.abs(y_ref))) if y_ref.size else 0.0
    if variance == "mean-square":
        ms = (rows * rows).mean(axis=1)
        xhat_max = float(np.max(np.abs(rows) / np.sqrt(ms + eps)[:, None]))
        dvar_rel = (n + 4) * u_s
        atol = g * xhat_max * dvar_rel / 2 + 4 * u_o * y_max
        why = f"mean square of n={n}: (n+4)u relative, |xhat| dvar_rel/2 + 4 u_out max|y|, u={u_s:.2g}"
        return Tol(atol=atol, rtol=0.0, why=why)
    mu = rows.mean(axis=1)
    var = rows.var(axis=1)
    sigma = np.sqrt(var + eps)
    xhat_max = float(np.max(np.abs(rows - mu[:, None]) / sigma[:, None]))
    dmu_over_sigma = float(np.max((n + 2) * u_s * np.max(np.abs(rows), axis=1) / sigma))
    if variance == "two-pass":
        dvar_rel = (n + 4) * u_s + dmu_over_sigma ** 2
        var_why = "(n+4)u + (dmu/sigma)^2 [two-pass]"
    else:
        kappa = float(1.0 + np.max(mu * mu / np.maximum(var, np.finfo(np.float64).tiny)))
        dvar_rel = (n + 4) * u_s * kappa
        var_why = f"(n+4)u kappa, kappa={kappa:.3g} [one-pass]"
    atol = g * (dmu_over_sigma + xhat_max * dvar_rel / 2) + 4 * u_o * y_max
    if dvar_rel >= 1:
        # No digit of the variance left: the bound of a variance anywhere in [0, var (1 + dvar_rel)].
        spread = float(np.max(np.abs(rows - mu[:, None])))
        atol = g * spread * (1 + dmu_over_sigma) / np.sqrt(eps) + y_max + 4 * u_o * y_max
        var_why += " >= 1: no digit of the variance left, bound of a zero variance"
    why = (f"per-sample stats: n={n}, u_stats={u_s:.2g}; (n+2)u max|x|/sigma + |xhat| dvar_rel/2 with dvar_rel = "
           f"{var_why}, + 4 u_out max|y|")
    return Tol(atol=atol, rtol=0.0, why=why)


def norm_batch_independence(tol_vs_exact: Tol, bitwise: bool) -> Tol:
    """Tolerance for |y_sample(in batch A) - y_sample(in batch B)| of a per-sample normalization.

    The statistics of a sample use that sample's values only, so in exact arithmetic the deviation is 0. Where the
    framework's declaration says the computation is bitwise batch-independent (each sample's reduction is the same
    sequence of operations whatever the batch: row-wise kernels), the bound is 0. Otherwise a framework may pick a
    different reduction order or vectorization per batch shape (XLA fuses and tiles per shape), so each of the two
    outputs is only within its bound of the exact value (`norm_output`), and by the triangle inequality they differ
    by at most twice that bound.
    """
    if bitwise:
        return Tol(atol=0.0, rtol=0.0, why="declared bitwise batch-independent: per-sample reductions whose "
                                            "arithmetic does not depend on the batch")
    return Tol(atol=2 * tol_vs_exact.atol, rtol=2 * tol_vs_exact.rtol,
               why=f"per-sample statistics (exact deviation 0); two outputs each within the oracle bound -> 2x "
                   f"({tol_vs_exact.why})")


def norm_classification_margin(tol: Tol, candidates: dict[str, np.ndarray]) -> None:
    """Assert that candidate oracle outputs differ from each other by more than the tolerance (else a declared
    fact cannot be told apart by the data); raises AssertionError naming the pair."""
    names = list(candidates)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            d = float(np.max(np.abs(np.asarray(candidates[a]) - np.asarray(candidates[b]))))
            assert d > 10 * tol.atol, (f"test design: candidates {a!r} and {b!r} differ by {d:.3g}, not separable "
                                       f"from the tolerance {tol.atol:.3g}")
# -- blocks around BatchNorm (adapters/blocks: Dropout, ReLU, a one-unit sigmoid/softmax) ------------------------
"""Blocks are checked layer by layer: each layer's framework output against the oracle applied to the framework's
OWN input to that layer (the previous layer's output, exact in float64), so each bound is one layer's rounding and
nothing compounds. The BatchNorm layers reuse ``bn_output``; the others are below. The Dropout measurements against
Li et al.'s variance shift are statistical (the masks are random): their bound is the estimator's standard error
times ``SAMPLING_Z``.
"""

# Width of a statistical bound in standard errors. A normal deviate exceeds 6 with probability 2.0e-9 (two-sided).
# A run compares about 1000 such values (9 adapters x 2 blocks x 3 rates x 4 features x 4 measurements, plus the kept
# fractions), so a false alarm is expected about once in 5 x 10^5 runs (and the data are seeded, so a given version
# either always or never alarms). The estimators are means of 8192 independent bounded terms, where the normal
# approximation holds well; the delta-method standard error is first order, its O(1/n) error is far below the margin.
SAMPLING_Z = 6.0


def dense_output(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, dtype: str) -> Tol:
    """x @ kernel.T + bias in `dtype`: a dot product of K terms plus the bias, |error| <= (K + 2) u (|x| |W|^T + |b|)
    (Higham section 3.1), the largest over the outputs."""
    u = roundoff(dtype)
    k = np.asarray(kernel, np.float64)
    mag = np.abs(np.asarray(x, np.float64)) @ np.abs(k).T + np.abs(np.asarray(bias, np.float64))
    return Tol(atol=(k.shape[1] + 2) * u * float(np.max(mag)), rtol=0.0,
               why=f"dense: (K+2) u max(|x||W|^T + |b|), K={k.shape[1]}, u={u:.2g}")


def exact(what: str) -> Tol:
    """An operation that rounds nothing (ReLU, the identity)."""
    return Tol(atol=0.0, rtol=0.0, why=f"{what} is exact in every dtype")


def elementwise(dtype: str, roundings: int, what: str) -> Tol:
    """An elementwise map with a few roundings (Dropout's scaling by 1/q: the factor and the product, 2 roundings;
    sigmoid: exp, add, divide, a few ulps of the library's exp): relative error <= roundings * u, plus the same
    absolute slack for outputs that underflow towards 0."""
    u = roundoff(dtype)
    return Tol(atol=roundings * u, rtol=roundings * u, why=f"{what}: {roundings} roundings, u={u:.2g}")


def softmax_output(n_reduced: int, dtype: str) -> Tol:
    """Softmax over n values: n exps (a few ulps each), a sum of n terms ((n + 2) u relative) and a division."""
    u = roundoff(dtype)
    r = (n_reduced + 8) * u
    return Tol(atol=r, rtol=r, why=f"softmax over {n_reduced} values: (n+8) u, u={u:.2g}")


def bce_loss(z: np.ndarray, dtype: str) -> Tol:
    """Mean binary cross-entropy of N logits z: each term max(z,0) - z t + log1p(exp(-|z|)) has a few roundings of
    its magnitude (<= |z| + log 2); the mean of N terms adds (N + 2) u of the sum of magnitudes / N. A loss on
    probabilities also rounds p = sigmoid(z) (relative u) before the log, an absolute u/min(p, 1-p) in the term."""
    u = roundoff(dtype)
    z = np.asarray(z, np.float64)
    p = 0.5 * (1.0 + np.tanh(0.5 * z))
    term = float(np.max(np.abs(z))) + np.log(2.0)
    via_p = float(np.max(1.0 / np.minimum(p, 1.0 - p)))
    atol = (z.shape[0] + 10) * u * term + 8 * u * via_p
    return Tol(atol=atol, rtol=0.0, why=f"BCE of N={z.shape[0]} logits: (N+10) u (max|z| + log 2) + 8 u / min(p, 1-p)")


def sgd_recovered_gradient(x: np.ndarray, w_before: np.ndarray, w_after: np.ndarray, lr: float, dtype: str) -> Tol:
    """A gradient read back from one SGD step, g = (w_before - w_after) / lr. The framework's gradient of the mean
    BCE through a dense layer, sum_i (p_i - t_i) x_i / N, has |p - t| <= 1 and (N + 8) u of relative rounding
    (including sigmoid's few ulps): <= (N + 8) u max|x|. Storing w_after rounds it by u |w_after|, and the
    subtraction recovers lr g to that accuracy, so g carries u (|w_before| + |w_after|) / lr more."""
    u = roundoff(dtype)
    x = np.asarray(x, np.float64)
    w = float(np.max(np.abs(w_before))) + float(np.max(np.abs(w_after)))
    atol = (x.shape[0] + 8) * u * max(float(np.max(np.abs(x))), 1.0) + 2 * u * w / lr
    return Tol(atol=atol, rtol=0.0, why=f"SGD-recovered gradient: (N+8) u max|x| + 2 u (|w0|+|w1|)/lr, u={u:.2g}")


def sampled(expected: np.ndarray, standard_error: np.ndarray, what: str, bias: float = 0.0) -> Tol:
    """A statistical measurement against its expectation: SAMPLING_Z standard errors (the largest over the
    measurements) plus a known deterministic bias (eps inside the square root, the Bessel factor of an unbiased
    running variance), which the expectation leaves out."""
    se = float(np.max(np.asarray(standard_error, np.float64)))
    return Tol(atol=SAMPLING_Z * se + bias, rtol=0.0,
               why=f"{what}: {SAMPLING_Z:g} standard errors ({se:.3g}) + bias {bias:.3g}; false alarm ~2e-9 per check")


def keep_fraction(n: int, q: float) -> Tol:
    """Fraction of values a Dropout keeps out of n independent Bernoulli(q) draws: standard error sqrt(q(1-q)/n)."""
    return sampled(np.array(q), np.array(np.sqrt(q * (1.0 - q) / n)), f"kept fraction of {n} Bernoulli({q:g})")
# -- multi-replica BatchNorm (suites/test_replicas.py) ----------------------------------------------------------------
# A replica's statistics reduce over the pooled shards of its group (its own shard for local statistics, every shard
# for global ones). Whether the framework reduces locally and then all-reduces partial sums, or all-gathers partial
# moments, the computed value is a sum of the same n values in another order: the recursive-sum bound gamma_n of the
# pooled n (module docstring) covers it, since the extra cross-replica additions (at most N - 1 of them) are part of
# the n - 1 additions the bound already counts. So each replica is held to the single-layer bound of its pooled batch.


def replica_output(pooled: np.ndarray, axis: int, y_ref_pooled: np.ndarray, scale, eps: float, *, dtype: str,
                   variance: str) -> Tol:
    """A replica's training-mode output: `bn_output` of its group's pooled batch."""
    return bn_output(pooled, axis, y_ref_pooled, scale, eps, io_dtype=dtype, variance=variance)


def replica_running_stats(pooled_batches: list[np.ndarray], axis: int, *, dtype: str, steps: int,
                          state_scale: float) -> Tol:
    """A replica's running statistics after `steps` steps: `running_stats` over the batches its statistics pooled
    (for the broadcast rule: replica 0's shards and its own, the widest of both)."""
    return running_stats(pooled_batches, axis, stats_dtype=dtype, steps=steps, state_scale=state_scale)


def replica_backward(pooled: np.ndarray, dpooled: np.ndarray, axis: int, dx_ref_pooled: np.ndarray, scale,
                     eps: float, *, dtype: str) -> Tol:
    """A replica's dx: `bn_backward` of its group's pooled batch (the two cross-replica reductions are its two
    reductions over the pooled n)."""
    return bn_backward(pooled, dpooled, axis, dx_ref_pooled, scale, eps, dtype=dtype)["dx"]
# -- mixed precision (suites/test_mixed_precision.py) --------------------------------------------------------------

def mixed_running_stats(x: np.ndarray, axis: int, *, stats_dtype: str, state_dtype: str, momentum: float,
                        state_scale: float) -> Tol:
    """Running mean / variance after ONE training step of a layer fed low-precision activations.

    The activations are exact in their own dtype, so the oracle sees what the framework sees. Two error sources:
    the batch statistics, computed in `stats_dtype` (the ``running_stats`` bound for one step: reduction bound
    (n+2) u_s max|x| for the mean, (n+4) u_s kappa var n/(n-1) for the variance, plus 2 u_s of EMA arithmetic on
    the state), and the storage: the new value is rounded once to `state_dtype`, a relative error u_state (taken
    twice: the update may be formed in the storage dtype, (1 - m) * old + m * new, two roundings of the result's
    size). A layer that stores its running statistics in float16 while declaring float32 misses this bound by the
    float16 rounding, 2^-11 relative, 100x the float32 reduction bound for our n ~ 100.
    """
    base = running_stats([x], axis, stats_dtype=stats_dtype, steps=1, state_scale=state_scale)
    u_state = roundoff(state_dtype)
    return Tol(atol=base.atol, rtol=base.rtol + 2 * u_state,
               why=f"{base.why}; + 2 u_state |value| for storage in {state_dtype} (u={u_state:.2g}), momentum "
                   f"{momentum:g}")
