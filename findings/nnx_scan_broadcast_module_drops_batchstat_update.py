"""flax.nnx: nnx.scan over a BatchNorm module broadcast with in_axes=None trains every step, but the BatchStat
updates are discarded without an error: the module's running mean stays where it was.

flax/nnx/transforms/iteration.py: ScanFn puts the broadcast output state into _broadcast_deque_out_tmp ('discarded').
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import sys

try:
    import numpy as np
    import jax
    import jax.numpy as jnp
    import flax
    from flax import nnx
    print(f"versions: flax {flax.__version__}, jax {jax.__version__}, numpy {np.__version__}")

    xs = jnp.asarray(np.random.default_rng(0).normal(2.0, 1.0, (3, 8, 4)), jnp.float32)  # 3 steps of 8 x 4
    bn = nnx.BatchNorm(4, momentum=0.9, rngs=nnx.Rngs(0))
    ys = nnx.scan(lambda m, x: m(x, use_running_average=False), in_axes=(None, 0), out_axes=0)(bn, xs)
    after = np.asarray(bn.mean[...])
    carried = nnx.BatchNorm(4, momentum=0.9, rngs=nnx.Rngs(0))
    nnx.scan(lambda m, x: (m, m(x, use_running_average=False)), in_axes=(nnx.Carry, 0),
             out_axes=(nnx.Carry, 0))(carried, xs)
    print("nnx.scan(f, in_axes=(None, 0))(bn, xs), 3 training steps, momentum 0.9, batch means near 2")
    print(f"observed: bn.mean after the scan {after} (no error, no warning)")
    print(f"expected: the update kept, as with in_axes=(nnx.Carry, 0): {np.asarray(carried.mean[...])}, "
          "or an error as nnx.vmap raises for a broadcast module whose state is updated")
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if np.array_equal(after, np.zeros(4)) else 0)
