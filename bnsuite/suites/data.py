"""Seeded test inputs and layer states. One job: make data that exposes semantic mistakes.

Each channel gets its own mean and spread, so a wrong channel axis, a swapped scale/offset or a wrong estimator shows.
Values are rounded to the test dtype first, so the oracle sees exactly what the framework sees.
"""

from __future__ import annotations

import os

import numpy as np

from bnsuite.adapters.base import Spec, State
from bnsuite.adapters.dtypes import representable  # noqa: F401 (data.representable: the suites' name for it)

# Per-rank shape in channels-first order; the product of the non-channel dims is the reduction size n.
SHAPES = {2: (16, None), 3: (4, None, 6), 4: (4, None, 5, 6), 5: (2, None, 3, 4, 5)}


SEED_ENV = "BNSUITE_SEED"


def seed_shift() -> int:
    """The data seed chosen for this run (pytest --bn-seed=N, env BNSUITE_SEED); 0, the default, is CI's data."""
    return int(os.environ.get(SEED_ENV) or 0)


def seed_for(n: int) -> int:
    """The seed that stands for the suite's fixed seed `n` in this run: `n` itself under the default data seed 0,
    else a seed derived from (data seed, n), so every fixed seed of the suites moves to other data together while
    distinct fixed seeds stay distinct streams. Every seeded input of the suites goes through here."""
    shift = seed_shift()
    return n if shift == 0 else int(np.random.SeedSequence([shift, n]).generate_state(1)[0])


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
    rng = np.random.default_rng(seed_for(seed))
    shape = shape_for(spec, batch_size)
    c = spec.num_features
    means = rng.uniform(-1, 1, c) * mean_scale
    stds = rng.uniform(0.5, 2.0, c)
    bshape = [1] * len(shape)
    bshape[spec.channel_axis] = c
    x = rng.standard_normal(shape) * stds.reshape(bshape) + means.reshape(bshape)
    return representable(x, spec.dtype)


def two_values(spec: Spec, seed: int = 0) -> np.ndarray:
    """The smallest batch with a variance, (2, C) for a rank-2 spec: channel c holds mean_c -/+ d_c with mean_c in
    [-1, 1] and d_c in [0.5, 2], so the biased variance d_c**2 is well away from zero on every data seed (two free
    draws can land arbitrarily close, and then no tolerance tells the two estimators apart)."""
    if spec.rank != 2:
        raise ValueError(f"two_values makes rank-2 batches, got rank {spec.rank}")
    rng = np.random.default_rng(seed_for(seed))
    means = rng.uniform(-1, 1, spec.num_features)
    gaps = rng.uniform(0.5, 2.0, spec.num_features) * rng.choice([-1.0, 1.0], spec.num_features)
    return representable(np.stack([means - gaps, means + gaps]), spec.dtype)


def batches(spec: Spec, k: int, seed: int = 0) -> list[np.ndarray]:
    return [batch(spec, seed=seed + 1000 * i) for i in range(k)]


def state(spec: Spec, seed: int = 1) -> State:
    """A non-trivial state (gamma != 1, beta != 0, running stats != init) so swaps and resets are visible."""
    rng = np.random.default_rng(seed_for(seed))
    c = spec.num_features
    scale = rng.uniform(0.5, 1.5, c) if spec.affine else None
    offset = rng.uniform(-0.5, 0.5, c) if spec.affine else None
    mean = rng.uniform(-0.5, 0.5, c) if spec.track_running_stats else None
    var = rng.uniform(0.5, 2.0, c) if spec.track_running_stats else None
    r = lambda a: None if a is None else representable(a, spec.dtype)
    return State(r(scale), r(offset), r(mean), r(var))


def cotangent(x: np.ndarray, seed: int = 7) -> np.ndarray:
    """A fixed upstream gradient dy for backward / optimizer steps."""
    return np.random.default_rng(seed_for(seed)).standard_normal(x.shape)


def recipe(spec: Spec, seed: int = 0, state_seed: int = 1) -> str:
    """NumPy code that makes exactly what batch(spec, seed) and state(spec, state_seed) make (x, scale, offset, mean,
    var), for standalone reproductions: the input is generated from its seed, never dumped."""
    np_dtype = "ml_dtypes.bfloat16" if spec.dtype == "bfloat16" else f"np.{spec.dtype}"
    c = spec.num_features
    bshape = [1] * len(shape_for(spec))
    bshape[spec.channel_axis] = c
    lines = (["import ml_dtypes"] if spec.dtype == "bfloat16" else []) + [
        "import numpy as np",
        f"rng = np.random.default_rng({seed_for(seed)})  # the input: each channel its own mean and spread",
        f"means, stds = rng.uniform(-1, 1, {c}), rng.uniform(0.5, 2.0, {c})",
        f"x = rng.standard_normal({shape_for(spec)}) * stds.reshape({tuple(bshape)}) + means.reshape({tuple(bshape)})",
        f"x = x.astype({np_dtype})",
        f"rng = np.random.default_rng({seed_for(state_seed)})  # the layer's state before the step",
        f"scale, offset = rng.uniform(0.5, 1.5, {c}), rng.uniform(-0.5, 0.5, {c})" if spec.affine else
        "scale = offset = None",
    ]
    if spec.track_running_stats:
        lines.append(f"mean, var = rng.uniform(-0.5, 0.5, {c}), rng.uniform(0.5, 2.0, {c})")
    return "\n".join(lines)
