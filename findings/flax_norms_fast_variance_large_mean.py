"""Flax LayerNorm (and GroupNorm, InstanceNorm) default to use_fast_variance=True: Var = E[x^2] - E[x]^2, clipped at
0. In float32, for samples whose mean is ~1000x their spread the variance loses every digit, and the output is far
from the normalized input (flax/linen/normalization.py: _compute_stats). use_fast_variance=False is accurate.
"""
import sys

try:
    import flax.linen as nn
    import jax
    import numpy as np
    import flax
    print(f"versions: flax {flax.__version__}, jax {jax.__version__}, numpy {np.__version__}")

    rng = np.random.default_rng(11)
    x = (rng.standard_normal((8, 64)) * rng.uniform(0.5, 2.0, 64) + 1000.0).astype(np.float32)
    layer = nn.LayerNorm()  # epsilon=1e-6, reduction over the last axis
    variables = layer.init(jax.random.PRNGKey(0), x)
    y = np.asarray(layer.apply(variables, x), np.float64)
    x64 = x.astype(np.float64)
    expected = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-6)
    err = float(np.max(np.abs(y - expected)))
    slow = nn.LayerNorm(use_fast_variance=False)
    err_slow = float(np.max(np.abs(np.asarray(slow.apply(variables, x), np.float64) - expected)))
    print(f"observed: max abs error {err:.3g} with the default use_fast_variance=True "
          f"({err_slow:.3g} with use_fast_variance=False)")
    print("expected: max abs error below 1e-3, as with the two-pass variance (float64 oracle)")
except Exception as e:  # noqa: BLE001
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if err > 1e-3 else 0)
