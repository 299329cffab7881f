"""Seeded test inputs and layer states. One job: make data that exposes semantic mistakes.

Each channel gets its own mean and spread, so a wrong channel axis, a swapped scale/offset or a wrong estimator shows.
Values are rounded to the test dtype first, so the oracle sees exactly what the framework sees.
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Spec, State
from bnsuite.adapters.dtypes import representable  # noqa: F401 (data.representable: the suites' name for it)

# Per-rank shape in channels-first order; the product of the non-channel dims is the reduction size n.
SHAPES = {2: (16, None), 3: (4, None, 6), 4: (4, None, 5, 6), 5: (2, None, 3, 4, 5)}


def shape_for(spec: Spec, batch: int | None = None) -> tuple[int, ...]:
    dims = list(SHAPES[spec.rank])
    dims[1] = spec.num_features
    if batch is not None:
        dims[0] = batch
    if spec.channels_last:
        dims = [dims[0], *dims[2:], dims[1]]
    return tuple(dims)


def batch(spec: Spec, seed: int = 0, batch_size: int | None = None, mean_scale: float = 1.0) -> np.ndarray:
    """A batch in the spec's layout; channel c has mean in [-1, 1] * mean_scale and std in [0.5, 2]."""
    rng = np.random.default_rng(seed)
    shape = shape_for(spec, batch_size)
    c = spec.num_features
    means = rng.uniform(-1, 1, c) * mean_scale
    stds = rng.uniform(0.5, 2.0, c)
    bshape = [1] * len(shape)
    bshape[spec.channel_axis] = c
    x = rng.standard_normal(shape) * stds.reshape(bshape) + means.reshape(bshape)
    return representable(x, spec.dtype)


def batches(spec: Spec, k: int, seed: int = 0) -> list[np.ndarray]:
    return [batch(spec, seed=seed + 1000 * i) for i in range(k)]


def state(spec: Spec, seed: int = 1) -> State:
    """A non-trivial state (gamma != 1, beta != 0, running stats != init) so swaps and resets are visible."""
    rng = np.random.default_rng(seed)
    c = spec.num_features
    scale = rng.uniform(0.5, 1.5, c) if spec.affine else None
    offset = rng.uniform(-0.5, 0.5, c) if spec.affine else None
    mean = rng.uniform(-0.5, 0.5, c) if spec.track_running_stats else None
    var = rng.uniform(0.5, 2.0, c) if spec.track_running_stats else None
    r = lambda a: None if a is None else representable(a, spec.dtype)
    return State(r(scale), r(offset), r(mean), r(var))


def cotangent(x: np.ndarray, seed: int = 7) -> np.ndarray:
    """A fixed upstream gradient dy for backward / optimizer steps."""
    return np.random.default_rng(seed).standard_normal(x.shape)
