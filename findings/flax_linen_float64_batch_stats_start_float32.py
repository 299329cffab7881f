"""flax.linen: a float64 BatchNorm (dtype and param_dtype float64, x64 enabled) initializes its batch_stats in
float32; they turn float64 only after the first training step replaces them.

flax/linen/normalization.py: BatchNorm.__call__ creates ra_mean / ra_var with self.variable(..., jnp.zeros,
feature_shape) (no dtype: float32), then assigns momentum * ra_mean + (1 - momentum) * mean, which promotes.
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import sys

try:
    import numpy as np
    import jax

    jax.config.update("jax_enable_x64", True)
    import flax
    import flax.linen as nn
    print(f"versions: flax {flax.__version__}, jax {jax.__version__}, numpy {np.__version__}")

    x = np.random.default_rng(0).normal(3.0, 2.0, (16, 4))  # float64
    bn = nn.BatchNorm(use_running_average=False, dtype="float64", param_dtype="float64")
    variables = bn.init(jax.random.PRNGKey(0), x)
    before = str(variables["batch_stats"]["var"].dtype)
    _, updated = bn.apply(variables, x, mutable=["batch_stats"])
    after = str(updated["batch_stats"]["var"].dtype)
    print(f"flax {flax.__version__}: linen.BatchNorm(dtype=float64, param_dtype=float64) with jax_enable_x64")
    print(f"observed: batch_stats var dtype {before} after init, {after} after one training step")
    print("expected: float64 from init on (like the params), so the state dtype does not change under jit/checkpoints")
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if before != "float64" else 0)
