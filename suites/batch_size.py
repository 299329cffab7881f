"""Helpers of the batch-size suite (suites/test_batch_size.py): derived tolerances, sampling statistics, pooling.

Candidates for suites/tolerances.py (the one home of tolerances); they live here until its owner moves them. Each
function builds on a function of suites/tolerances.py and states how the bound follows from it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from suites import tolerances as tl

BATCH_SIZES = (1, 2, 8, 32, 128, 512)
TRAIN_BATCH_SIZES = (2, 4, 8, 16, 32, 128)
# Standard errors allowed between a sampling statistic and its expectation. The statistics below are weighted sums of
# >= 40 effectively independent batch variances over several independent channels, so they are close to normal;
# a two-sided normal tail beyond 5 sigma has probability 6e-7, and the data are seeded, so the check is deterministic
# and cannot flake while still catching an estimator that is off by a factor n/(n-1) at small n.
STAT_Z = 5.0


def inference_invariance(tol_vs_exact: tl.Tol) -> tl.Tol:
    """Tolerance for |y(batch size b) - y(full batch)| in inference mode.

    Inference BatchNorm is a fixed per-channel affine map y = (x - mean) / sqrt(var + eps) * scale + offset: every
    output element depends on its own input element and the state only, so in exact arithmetic the output of a sample
    cannot depend on the batch it travels in, and the deviation is 0. A framework may still pick a different kernel
    per batch size (vectorized body vs scalar tail, FMA or not, the mean folded into the offset or not), so each of
    the two computed outputs is only within the per-element rounding bound of the exact value:
    ``tl.bn_output(..., normalize_var=running var)`` = 8 u_stats (|scale| max|x| / sqrt(min var + eps) + max|y|)
    + 4 u_out max|y| (a few roundings per element, u = unit roundoff of the dtype). By the triangle inequality
    the two computed outputs differ by at most twice that bound. No reduction is involved, so the bound does not grow
    with the batch size.
    """
    return tl.Tol(atol=2 * tol_vs_exact.atol, rtol=2 * tol_vs_exact.rtol,
                  why="inference is a per-element affine map (exact deviation 0); two outputs each within the "
                      f"per-element bound -> 2x ({tol_vs_exact.why})")


def difference_of_outputs(tol_a: tl.Tol, tol_b: tl.Tol) -> tl.Tol:
    """Tolerance for (y_a - y_b) against the oracle's (ref_a - ref_b): each output is within its own bound of its
    oracle value, so the difference is within the sum of the two bounds (triangle inequality)."""
    return tl.Tol(atol=tol_a.atol + tol_b.atol, rtol=0.0,
                  why=f"difference of two outputs: sum of their bounds ({tol_a.why})")


def ema_weights(steps: int, momentum: float | None) -> tuple[float, np.ndarray]:
    """Weights of the initial value and of each batch statistic in the running statistic after `steps` updates.

    Canonical momentum m (weight of the new batch): w0 = (1 - m)^K, w_k = m (1 - m)^(K - k). momentum None
    (cumulative average): w0 = 0, w_k = 1 / K. Same recurrence as adapters.reference.update_running.
    """
    if momentum is None:
        return 0.0, np.full(steps, 1.0 / steps)
    k = np.arange(1, steps + 1)
    return (1.0 - momentum) ** steps, momentum * (1.0 - momentum) ** (steps - k)


@dataclasses.dataclass(frozen=True)
class Population:
    """A finite population per channel (columns); batches are drawn i.i.d. WITH replacement from it.

    With i.i.d. draws from a population of variance sigma^2 (divide by N) and fourth central moment mu4, a batch of n
    values has E[biased var] = (n - 1)/n sigma^2 and E[unbiased var] = sigma^2, and
    Var[unbiased var] = mu4 / n - sigma^4 (n - 3) / (n (n - 1))  (standard result for the sample variance).
    """

    values: np.ndarray  # (N, C)

    @property
    def mean(self) -> np.ndarray:
        return self.values.mean(axis=0)

    @property
    def var(self) -> np.ndarray:
        return self.values.var(axis=0)

    @property
    def mu4(self) -> np.ndarray:
        return ((self.values - self.mean) ** 4).mean(axis=0)

    def batches(self, n: int, k: int, seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        N, C = self.values.shape
        out = []
        for _ in range(k):
            idx = rng.integers(0, N, size=(n, C))  # independent draws per channel: channels are independent
            out.append(np.take_along_axis(self.values, idx, axis=0))
        return out

    def estimator_moments(self, n: int, estimator: str) -> tuple[np.ndarray, np.ndarray]:
        """Per channel: (expected value, variance) of one batch variance estimate with n values."""
        s4 = self.var ** 2
        var_unbiased = self.mu4 / n - s4 * (n - 3) / (n * (n - 1))
        factor = {"biased": (n - 1) / n, "unbiased": 1.0}[estimator]
        return factor * self.var, factor ** 2 * var_unbiased


def make_population(num_features: int, dtype: str, size: int = 8192, seed: int = 11) -> Population:
    """Per-channel normal values (channel c: own mean and spread), rounded to the test dtype."""
    from suites.data import representable

    rng = np.random.default_rng(seed)
    means = rng.uniform(-1, 1, num_features)
    stds = rng.uniform(0.5, 2.0, num_features)
    return Population(representable(rng.standard_normal((size, num_features)) * stds + means, dtype))


def running_var_ratio_expectation(pop: Population, n: int, steps: int, momentum: float | None, estimator: str,
                                  init_var: float) -> tuple[float, float]:
    """Expected channel-averaged ratio running_var / population var after `steps` updates, and its standard error.

    running_var = w0 v0 + sum_k w_k s_k with independent batch estimates s_k, so
    E = w0 v0 + (sum w_k) E[s], Var = (sum w_k^2) Var[s]; per channel divided by sigma_c^2 and averaged over C
    independent channels (variance of the average = sum of variances / C^2).
    """
    w0, w = ema_weights(steps, momentum)
    e_s, v_s = pop.estimator_moments(n, estimator)
    sig2 = pop.var
    exp_c = (w0 * init_var + w.sum() * e_s) / sig2
    var_c = (w ** 2).sum() * v_s / sig2 ** 2
    C = len(sig2)
    return float(exp_c.mean()), float(np.sqrt(var_c.sum()) / C)


def pooled_statistics(means: list[np.ndarray], biased_vars: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (biased) variance of the union of K equal-size batches from their per-batch statistics.

    Law of total variance, exact for equal batch sizes: var(union) = mean_k(var_k) + mean_k(mean_k^2) - mean^2.
    This is the population statistic a single pass over the whole training data would compute: it has no
    batch-size bias, unlike an average of per-batch variances (E = (n - 1)/n sigma^2 for the biased estimator).
    """
    m = np.stack(means)
    v = np.stack(biased_vars)
    mean = m.mean(axis=0)
    return mean, v.mean(axis=0) + (m ** 2).mean(axis=0) - mean ** 2


def pooled_statistics_tol(mean_tol: tl.Tol, var_tol: tl.Tol, means: list[np.ndarray], n: int,
                          estimator: str) -> tuple[tl.Tol, tl.Tol]:
    """Tolerances of pooled_statistics computed (in float64) from per-batch statistics read from a framework.

    Each per-batch mean has error <= dm = mean_tol bound and each per-batch variance <= dv = var_tol bound (one
    update with momentum 1, ``tl.running_stats(steps=1)``). Averaging in float64 does not grow an error bound. An
    unbiased estimate is converted to biased by the factor (n-1)/n <= 1. In var = mean(v_k) + mean(m_k^2) - M^2,
    d(m_k^2) <= 2 |m_k| dm (+ dm^2) and d(M^2) <= 2 |M| dm (+ dm^2), so
    |d var| <= dv + 4 max|m_k| dm + 2 dm^2.
    """
    mmax = float(np.max(np.abs(np.stack(means))))
    dm = mean_tol.atol + mean_tol.rtol * mmax
    # mean_k(v_k) <= pooled var, so rtol * |v_k| averaged is at most rtol * pooled var: keep rtol on the result.
    dv = var_tol.atol
    return (tl.Tol(atol=dm, rtol=0.0, why=f"mean of per-batch means, each within {dm:.3g} ({mean_tol.why})"),
            tl.Tol(atol=dv + 4 * mmax * dm + 2 * dm * dm, rtol=var_tol.rtol,
                   why=f"law of total variance from per-batch stats: dv + 4 max|m| dm + 2 dm^2 "
                       f"(dv={dv:.3g}, dm={dm:.3g}, max|m|={mmax:.3g}; {var_tol.why})"))
