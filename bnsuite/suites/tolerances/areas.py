"""Tolerances of the suites beyond one BatchNorm layer: the batch-independent normalization layers, the blocks around
BatchNorm (Dropout, ReLU, one-unit sigmoid/softmax), BatchNorm split over replicas, and mixed precision.

Part of the one home of tolerances: each builds on the functions of tolerances/core.py (notation, unit roundoff u,
reduction length n, conditioning) and states how its bound follows. Tests reach them through the package (tl.*).
"""

from __future__ import annotations

import numpy as np

from bnsuite.suites.tolerances.core import Tol, bn_backward, bn_output, roundoff, running_stats


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
