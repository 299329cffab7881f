"""use_running_average given both at construction and at call: flax.linen raises ValueError (merge_param), flax.nnx
silently lets the call's value win. Code moving between the two APIs changes from an error to a silent override."""

import sys

try:
    import numpy as np
    import jax
    from flax import linen, nnx
    import flax
    print(f"versions: flax {flax.__version__}, jax {jax.__version__}, numpy {np.__version__}")

    x = np.random.default_rng(0).standard_normal((16, 3)).astype("float32") * 2 + 1
    bn = linen.BatchNorm(use_running_average=True)  # built for inference
    variables = bn.init(jax.random.PRNGKey(0), x)
    try:
        bn.apply(variables, x, use_running_average=False, mutable=["batch_stats"])  # called for training
        linen_result = "ran"
    except ValueError:
        linen_result = "error:ValueError"
    m = nnx.BatchNorm(3, use_running_average=True, rngs=nnx.Rngs(0))
    y = np.asarray(m(x, use_running_average=False))
    nnx_result = "batch statistics" if abs(float(y.mean())) < 1e-3 else "running statistics"
    print(f"observed: linen {linen_result}, nnx {nnx_result} (the call's use_running_average=False wins)")
    print("expected: the same answer from both APIs (linen's ValueError, or nnx's call-wins rule, in both)")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if linen_result == "error:ValueError" and nnx_result == "batch statistics" else 0)
