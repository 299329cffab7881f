"""NumPy float64 reference oracle for BatchNorm.

One small function per mode, each returning every output the operation defines, with the conventions visible:

* normalization always uses the BIASED (population) variance of the batch: mean((x - mean)^2);
* ``eps`` is added to the variance inside the square root: (x - mean) / sqrt(var + eps);
* the running statistics are updated with the CANONICAL momentum (weight of the new batch statistic, see
  ``bnsuite.adapters.base``): running <- (1 - m) * running + m * batch; ``m=None`` is the cumulative average, where the
  k-th batch (k = 1, 2, ...) gets weight 1/k;
* the batch variance that feeds the running variance is "biased" (divide by n) or "unbiased" (divide by n - 1),
  as the framework's declaration says.

Shapes: ``x`` has the channel on ``axis``; per-channel vectors have shape (C,).
"""

from __future__ import annotations

import dataclasses

import numpy as np


def _reduce_axes(x: np.ndarray, axis: int) -> tuple[int, ...]:
    axis = axis % x.ndim
    return tuple(a for a in range(x.ndim) if a != axis)


def _bcast(v: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    return np.asarray(v, dtype=np.float64).reshape(shape)


def reduction_size(shape: tuple[int, ...], axis: int) -> int:
    """Number of values per channel that a batch statistic averages."""
    return int(np.prod([s for a, s in enumerate(shape) if a != axis % len(shape)]))


@dataclasses.dataclass
class BatchMoments:
    mean: np.ndarray
    var_biased: np.ndarray
    var_unbiased: np.ndarray  # NaN where n == 1
    n: int

    def var(self, estimator: str) -> np.ndarray:
        if estimator == "biased":
            return self.var_biased
        if estimator == "unbiased":
            return self.var_unbiased
        raise ValueError(f"unknown variance estimator {estimator!r}")


def moments(x: np.ndarray, axis: int) -> BatchMoments:
    """Per-channel batch mean and both variance estimators, in float64 (two-pass, no cancellation)."""
    x = np.asarray(x, dtype=np.float64)
    axes = _reduce_axes(x, axis)
    n = reduction_size(x.shape, axis)
    mean = x.mean(axis=axes)
    sq = ((x - _bcast(mean, x, axis)) ** 2).sum(axis=axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        unbiased = sq / (n - 1) if n > 1 else np.full_like(sq, np.nan)
    return BatchMoments(mean=mean, var_biased=sq / n, var_unbiased=unbiased, n=n)


def normalize(x, mean, var, scale, offset, eps: float, axis: int) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) * scale + offset; scale/offset None means identity."""
    x = np.asarray(x, dtype=np.float64)
    y = (x - _bcast(mean, x, axis)) / np.sqrt(_bcast(var, x, axis) + eps)
    if scale is not None:
        y = y * _bcast(scale, x, axis)
    if offset is not None:
        y = y + _bcast(offset, x, axis)
    return y


def forward_train(x, scale, offset, eps: float, axis: int) -> tuple[np.ndarray, BatchMoments]:
    """Training mode: normalize with the batch statistics. Returns (y, batch moments)."""
    m = moments(x, axis)
    return normalize(x, m.mean, m.var_biased, scale, offset, eps, axis), m


def forward_inference(x, scale, offset, running_mean, running_var, eps: float, axis: int) -> np.ndarray:
    """Inference mode: normalize with the running statistics."""
    return normalize(x, running_mean, running_var, scale, offset, eps, axis)


def update_running(running_mean, running_var, batch: BatchMoments, momentum: float | None, estimator: str,
                   step: int) -> tuple[np.ndarray, np.ndarray]:
    """One running-statistics update. `step` is the 1-based index of this batch (used by the cumulative average)."""
    m = (1.0 / step) if momentum is None else momentum
    new_mean = (1.0 - m) * np.asarray(running_mean, np.float64) + m * batch.mean
    new_var = (1.0 - m) * np.asarray(running_var, np.float64) + m * batch.var(estimator)
    return new_mean, new_var


def train_steps(batches, running_mean, running_var, momentum: float | None, estimator: str, axis: int,
                first_step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Running statistics after one training step per batch in `batches`."""
    mean, var = running_mean, running_var
    for i, xb in enumerate(batches):
        mean, var = update_running(mean, var, moments(xb, axis), momentum, estimator, first_step + i)
    return mean, var


def backward_train(x, dy, scale, eps: float, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Analytic gradient of sum(y * dy) through the batch statistics: (dx, dscale, doffset)."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    axes = _reduce_axes(x, axis)
    m = moments(x, axis)
    inv_std = 1.0 / np.sqrt(m.var_biased + eps)
    xhat = (x - _bcast(m.mean, x, axis)) * _bcast(inv_std, x, axis)
    doffset = dy.sum(axis=axes)
    dscale = (dy * xhat).sum(axis=axes)
    g = np.ones_like(m.mean) if scale is None else np.asarray(scale, np.float64)
    dx = _bcast(g * inv_std / m.n, x, axis) * (
        m.n * dy - _bcast(doffset, x, axis) - xhat * _bcast(dscale, x, axis))
    return dx, dscale, doffset


def backward_inference(x, dy, scale, running_mean, running_var, eps: float, axis: int):
    """Gradient of sum(y * dy) in inference mode, where BN is a fixed per-channel affine map."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    axes = _reduce_axes(x, axis)
    inv_std = 1.0 / np.sqrt(np.asarray(running_var, np.float64) + eps)
    xhat = (x - _bcast(running_mean, x, axis)) * _bcast(inv_std, x, axis)
    g = np.ones_like(inv_std) if scale is None else np.asarray(scale, np.float64)
    return dy * _bcast(g * inv_std, x, axis), (dy * xhat).sum(axis=axes), dy.sum(axis=axes)
