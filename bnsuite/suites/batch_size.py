"""Helpers of the batch-size suite (suites/test_batch_size.py): the EMA weights of k steps, a sampled population and
the running-variance ratio expected from it, pooling. Each states how its value follows; the tolerances the suite
compares them with come from suites/tolerances/.
"""

from __future__ import annotations

import dataclasses

import numpy as np


BATCH_SIZES = (1, 2, 8, 32, 128, 512)
TRAIN_BATCH_SIZES = (2, 4, 8, 16, 32, 128)


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
        from bnsuite.suites.data import seed_for

        rng = np.random.default_rng(seed_for(seed))
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
    from bnsuite.suites.data import representable, seed_for

    rng = np.random.default_rng(seed_for(seed))
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


