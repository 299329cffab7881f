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


# -- multi-replica BatchNorm: the batch split over replicas ---------------------------------------------------------
# A global batch is split along axis 0 into contiguous shards, one per replica. A rule names which replicas' shards
# a replica's statistics cover: "local" (its own), "global" (all), "pairs" (replicas 2i and 2i+1 together). For the
# running statistics, "broadcast0" is torch DDP's default: before every step replica 0's running statistics are
# copied to every replica, which then updates them with its own shard. For the gradient, "own_loss" is the global
# statistics differentiated through a collective whose backward is the identity: each replica gets the gradient of its
# OWN part of the loss only, the cross-replica terms (the other replicas' dy) missing.


def replica_groups(rule: str, n_replicas: int) -> list[list[int]]:
    """The replicas whose shards are pooled for each replica's statistics, as a list of groups."""
    if rule == "local":
        return [[r] for r in range(n_replicas)]
    if rule == "global":
        return [list(range(n_replicas))]
    if rule == "pairs":
        return [list(range(i, min(i + 2, n_replicas))) for i in range(0, n_replicas, 2)]
    raise ValueError(f"unknown replica rule {rule!r}")


def _group_of(rule: str, n_replicas: int, r: int) -> list[int]:
    return next(g for g in replica_groups(rule, n_replicas) if r in g)


def split_batch(x, sizes) -> list[np.ndarray]:
    """Contiguous shards of axis 0 with the given sizes."""
    x = np.asarray(x, np.float64)
    edges = np.cumsum([0, *sizes])
    return [x[a:b] for a, b in zip(edges[:-1], edges[1:])]


def forward_train_replicas(x, sizes, rule: str, scale, offset, eps: float, axis: int) -> list[np.ndarray]:
    """Each replica's training-mode output: its shard normalized with the statistics of its group's shards."""
    parts = split_batch(x, sizes)
    out = []
    for r, part in enumerate(parts):
        if part.shape[0] == 0:  # an empty shard has an empty output, whatever its group's statistics
            out.append(part.copy())
            continue
        if rule == "unweighted":
            mean, var = unweighted_moments([parts[i] for i in range(len(sizes))], axis)
            out.append(normalize(part, mean, var, scale, offset, eps, axis))
            continue
        pooled = np.concatenate([parts[i] for i in _group_of(rule, len(sizes), r)], axis=0)
        m = moments(pooled, axis)
        out.append(normalize(part, m.mean, m.var_biased, scale, offset, eps, axis))
    return out


def unweighted_moments(parts, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Global statistics as the plain mean of each replica's moments, every shard weighing the same whatever its
    size: mean = avg_r mean_r(x), var = avg_r mean_r(x^2) - mean^2 (biased). An empty shard's moments are NaN (0/0),
    and so is the result."""
    means, squares = [], []
    for part in parts:
        part = np.asarray(part, np.float64)
        axes = _reduce_axes(part, axis)
        with np.errstate(invalid="ignore", divide="ignore"):
            n = reduction_size(part.shape, axis)
            means.append(part.sum(axis=axes) / n)
            squares.append((part * part).sum(axis=axes) / n)
    mean = np.mean(means, axis=0)
    return mean, np.mean(squares, axis=0) - mean * mean


def running_replicas(batches, sizes, rule: str, running_mean, running_var, momentum: float | None, estimator: str,
                     axis: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each replica's running (mean, var) after one training step per global batch in `batches`."""
    n = len(sizes)
    if rule == "broadcast0":
        state = [(np.asarray(running_mean, np.float64), np.asarray(running_var, np.float64))] * n
        for step, xb in enumerate(batches, start=1):
            parts = split_batch(xb, sizes)
            m0, v0 = state[0]  # the broadcast at the start of the step
            state = [update_running(m0, v0, moments(parts[r], axis), momentum, estimator, step) for r in range(n)]
        return state
    out = []
    for r in range(n):
        group = _group_of(rule, n, r)
        pooled = [np.concatenate([split_batch(xb, sizes)[i] for i in group], axis=0) for xb in batches]
        out.append(train_steps(pooled, running_mean, running_var, momentum, estimator, axis))
    return out


def backward_train_replicas(x, dy, sizes, rule: str, scale, eps: float, axis: int) -> list[np.ndarray]:
    """Each replica's dx of sum(y * dy) over the whole global batch, where the statistics pool the rule's groups:
    the backward of the group's pooled batch, sliced to the replica's shard (the cross-replica terms included);
    "own_loss": the global backward of the replica's own part of the loss (own_dy), sliced to its shard."""
    parts, dparts = split_batch(x, sizes), split_batch(dy, sizes)
    if rule == "own_loss":
        edges = np.cumsum([0, *sizes])
        return [backward_train(x, own_dy(dy, sizes, r), scale, eps, axis)[0][edges[r]:edges[r + 1]]
                for r in range(len(sizes))]
    out = []
    for r in range(len(sizes)):
        group = _group_of(rule, len(sizes), r)
        pooled = np.concatenate([parts[i] for i in group], axis=0)
        dpooled = np.concatenate([dparts[i] for i in group], axis=0)
        dx = backward_train(pooled, dpooled, scale, eps, axis)[0]
        start = sum(sizes[i] for i in group if i < r)
        out.append(dx[start:start + sizes[r]])
    return out


def own_dy(dy, sizes, r: int) -> np.ndarray:
    """The global dy with every shard but replica r's set to zero (replica r's own part of the loss)."""
    dparts = split_batch(dy, sizes)
    return np.concatenate([d if i == r else np.zeros_like(d) for i, d in enumerate(dparts)], axis=0)
