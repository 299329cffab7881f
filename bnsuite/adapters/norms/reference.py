"""NumPy float64 oracle for the batch-independent normalization layers.

Conventions, visible in the code: biased variance (divide by n); eps added inside the square root; statistics per
SAMPLE (the batch axis is never reduced); scale and offset per feature/channel, shape (C,).

Every kind reduces a set of values per sample; ``rows`` returns those sets as a 2-D array (one row per normalized
set), which the tolerance functions use to bound the rounding error of a framework's statistics.
"""

from __future__ import annotations

import numpy as np

GROUP_LAYOUTS = ("contiguous", "strided")


def group_of(num_channels: int, groups: int, layout: str = "contiguous") -> np.ndarray:
    """The group index of each channel: contiguous blocks [0..C/G), [C/G..2C/G)... or strided (c mod G)."""
    c = np.arange(num_channels)
    if layout == "contiguous":
        return c // (num_channels // groups)
    if layout == "strided":
        return c % groups
    raise ValueError(f"unknown group layout {layout!r}")


def _reduce_axes(x: np.ndarray, axes: str) -> tuple[int, ...]:
    if axes == "last":
        return (x.ndim - 1,)
    if axes == "non-batch":
        return tuple(range(1, x.ndim))
    raise ValueError(f"unknown axes {axes!r}")


def _affine(y: np.ndarray, scale, offset, channel_axis: int) -> np.ndarray:
    shape = [1] * y.ndim
    shape[channel_axis % y.ndim] = -1
    if scale is not None:
        y = y * np.asarray(scale, np.float64).reshape(shape)
    if offset is not None:
        y = y + np.asarray(offset, np.float64).reshape(shape)
    return y


def layer_norm(x, eps: float, scale=None, offset=None, axes: str = "last") -> np.ndarray:
    """(x - mean) / sqrt(var + eps) over `axes` of each sample, then per-feature (last axis) scale and offset."""
    x = np.asarray(x, np.float64)
    red = _reduce_axes(x, axes)
    mean = x.mean(axis=red, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=red, keepdims=True)
    return _affine((x - mean) / np.sqrt(var + eps), scale, offset, -1)


def rms_norm(x, eps: float, scale=None, axes: str = "last") -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) over `axes` of each sample (no centering), then per-feature scale."""
    x = np.asarray(x, np.float64)
    ms = (x * x).mean(axis=_reduce_axes(x, axes), keepdims=True)
    return _affine(x / np.sqrt(ms + eps), scale, None, -1)


def scaled_by_variance(x, eps: float, scale=None) -> np.ndarray:
    """x / sqrt(var + eps) over the last axis, NOT centered (what Keras' LayerNormalization(rms_scaling=True) does)."""
    x = np.asarray(x, np.float64)
    var = x.var(axis=-1, keepdims=True)
    return _affine(x / np.sqrt(var + eps), scale, None, -1)


def _grouped(x: np.ndarray, channel_axis: int, groups: int, layout: str):
    """x as (N, G, n): each row the values of one (sample, group), and the inverse mapping."""
    xc = np.moveaxis(x, channel_axis, -1)  # (N, S..., C)
    c = xc.shape[-1]
    order = np.argsort(group_of(c, groups, layout), kind="stable")  # channels sorted by group
    xs = xc[..., order].reshape(xc.shape[0], -1, groups, c // groups)  # (N, S, G, C/G)
    rows = np.moveaxis(xs, 2, 1).reshape(xc.shape[0], groups, -1)  # (N, G, S*C/G)
    return xc, order, rows


def group_norm(x, groups: int, eps: float, scale=None, offset=None, channel_axis: int = 1,
               layout: str = "contiguous") -> np.ndarray:
    """Statistics over each group's channels and every spatial axis, per sample; per-channel scale and offset."""
    x = np.asarray(x, np.float64)
    xc, order, rows = _grouped(x, channel_axis, groups, layout)
    mean = rows.mean(axis=2, keepdims=True)
    var = ((rows - mean) ** 2).mean(axis=2, keepdims=True)
    yrows = (rows - mean) / np.sqrt(var + eps)  # (N, G, S*C/G)
    c = xc.shape[-1]
    ys = np.moveaxis(yrows.reshape(xc.shape[0], groups, -1, c // groups), 1, 2).reshape(*xc.shape[:-1], c)
    yc = np.empty_like(ys)
    yc[..., order] = ys
    return _affine(np.moveaxis(yc, -1, channel_axis), scale, offset, channel_axis)


def instance_norm(x, eps: float, scale=None, offset=None, channel_axis: int = 1) -> np.ndarray:
    """GroupNorm with one channel per group: statistics over the spatial axes, per sample and channel."""
    x = np.asarray(x, np.float64)
    return group_norm(x, x.shape[channel_axis], eps, scale, offset, channel_axis)


def instance_norm_running(x, mean, var, eps: float, scale=None, offset=None, channel_axis: int = 1) -> np.ndarray:
    """InstanceNorm normalizing with running statistics (torch's track_running_stats=True in eval)."""
    x = np.asarray(x, np.float64)
    shape = [1] * x.ndim
    shape[channel_axis % x.ndim] = -1
    m = np.asarray(mean, np.float64).reshape(shape)
    v = np.asarray(var, np.float64).reshape(shape)
    return _affine((x - m) / np.sqrt(v + eps), scale, offset, channel_axis)


def rows(x, kind: str, *, channel_axis: int = -1, groups: int = 1, axes: str = "last",
         layout: str = "contiguous") -> np.ndarray:
    """The sets of values each normalization reduces, one per row (for error bounds)."""
    x = np.asarray(x, np.float64)
    if kind in ("layer", "rms"):
        red = _reduce_axes(x, axes)
        keep = [a for a in range(x.ndim) if a not in red]
        return np.transpose(x, keep + list(red)).reshape(int(np.prod([x.shape[a] for a in keep])), -1)
    g = x.shape[channel_axis] if kind == "instance" else groups
    return _grouped(x, channel_axis, g, layout)[2].reshape(-1, x.size // (x.shape[0] * g))


def forward(kind: str, x, eps: float, scale=None, offset=None, *, channel_axis: int = -1, groups: int = 1,
            axes: str = "last", layout: str = "contiguous") -> np.ndarray:
    """The oracle output of one kind (see bnsuite.adapters.norms for the kinds)."""
    if kind == "layer":
        return layer_norm(x, eps, scale, offset, axes)
    if kind == "rms":
        return rms_norm(x, eps, scale, axes)
    if kind == "group":
        return group_norm(x, groups, eps, scale, offset, channel_axis, layout)
    if kind == "instance":
        return instance_norm(x, eps, scale, offset, channel_axis)
    raise ValueError(f"unknown kind {kind!r}")
