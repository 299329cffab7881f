"""Flax LayerNorm under jax.jit: a sample's output changes (by 1 ulp) with the batch it is computed in.

The statistics are per sample, so the exact output cannot depend on the batch; but XLA compiles one fusion per input
shape, and the fused E[x^2] reduction (use_fast_variance=True) rounds differently for batch 1 and batch 8.
Harmless in size, but "bitwise batch-independent" does not hold, unlike torch.nn.LayerNorm on CPU.
"""
import sys

try:
    import flax.linen as nn
    import jax
    import numpy as np
    import flax
    print(f"versions: flax {flax.__version__}, jax {jax.__version__}, numpy {np.__version__}")

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((8, 6)) * rng.uniform(0.5, 2.0, 6) + rng.uniform(-1, 1, 6)).astype(np.float32)
    layer = nn.LayerNorm()
    variables = layer.init(jax.random.PRNGKey(0), x)
    apply = jax.jit(layer.apply)
    full = np.asarray(apply(variables, x))
    alone = np.concatenate([np.asarray(apply(variables, x[i:i + 1])) for i in range(8)])
    diff = float(np.max(np.abs(full.astype(np.float64) - alone)))
    print(f"observed: max |y(sample in batch of 8) - y(sample alone)| = {diff:.3g}")
    print("expected: 0 (bitwise: the statistics of a sample use that sample only)")
except Exception as e:  # noqa: BLE001
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if diff != 0 else 0)
