"""Flax: BatchNorm's default use_fast_variance=True computes the variance as E[x^2] - E[x]^2 (clamped at 0): with a
mean 10^4 times the spread, float32 cancellation destroys the variance and the normalized output is far off.

flax/linen/normalization.py: _compute_stats(use_fast_variance=True) -> mean2 - square(mean), maximum(0, ...);
flax.nnx.BatchNorm shares it. use_fast_variance=False (two-pass) is accurate.
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import sys

try:
    import numpy as np
    import jax
    import flax
    import flax.linen as nn
    print(f"versions: flax {flax.__version__}, jax {jax.__version__}, numpy {np.__version__}")

    x = (1e4 + np.random.default_rng(0).normal(0.0, 1.0, (64, 8))).astype(np.float32)  # mean 10^4 x the spread
    bn = nn.BatchNorm(use_running_average=False)
    y, _ = bn.apply(bn.init(jax.random.PRNGKey(0), x), x, mutable=["batch_stats"])
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
x64 = x.astype(np.float64)
err = float(np.max(np.abs(np.asarray(y, np.float64) - (x64 - x64.mean(0)) / np.sqrt(x64.var(0) + 1e-5))))
print(f"observed: linen.BatchNorm(use_running_average=False), float32 data with mean 1e4 and std 1: "
      f"max |output - float64 oracle| = {err:.4g}")
print("expected: about 1e-3 or less (a two-pass float32 variance: use_fast_variance=False gets there)")
sys.exit(1 if err > 0.1 else 0)
