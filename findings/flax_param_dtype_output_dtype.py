"""flax.nnx.BatchNorm and flax.linen.BatchNorm built with the same arguments (param_dtype=bfloat16, dtype left at
None) and fed the same bfloat16 activations return different output dtypes: linen bfloat16, NNX float32.

linen's _normalize picks the output dtype from [x, scale, bias]; NNX's BatchNorm.__call__ first promotes
(x, mean, var, scale, bias) together, and the running statistics are float32.
"""
import sys

try:
    import numpy as np
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax import nnx
    import flax
    print(f"versions: flax {flax.__version__}, jax {jax.__version__}, numpy {np.__version__}")

    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 5, 6, 3)), jnp.bfloat16)
    linen = nn.BatchNorm(param_dtype=jnp.bfloat16)
    variables = linen.init(jax.random.PRNGKey(0), x, use_running_average=True)
    y_linen, _ = linen.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    y_nnx = nnx.BatchNorm(3, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))(x, use_running_average=False)
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
print(f"observed: flax.nnx.BatchNorm(param_dtype=bfloat16) output dtype {y_nnx.dtype}")
print(f"expected: the same as flax.linen.BatchNorm(param_dtype=bfloat16), {y_linen.dtype}")
sys.exit(1 if y_nnx.dtype != y_linen.dtype else 0)
