"""flax.linen.BatchNorm(axis_name=...) with uneven shards (padding + mask) under jax.shard_map: the statistics are the
plain mean of the two devices' masked means, not the global mean. Exit 1 while so, 0 once weighted, 2 on error."""
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

try:
    import numpy as np
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, PartitionSpec as P
    import flax
    print(f"versions: flax {flax.__version__}, jax {jax.__version__}, numpy {np.__version__}")

    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32) + np.arange(8)[:, None].astype(np.float32)
    sizes = (5, 3)  # device 0 holds rows 0..4, device 1 rows 5..7, each padded to 5 rows
    padded = np.zeros((2, 5, 3), np.float32)
    mask = np.zeros((2, 5, 1), bool)
    padded[0, :5], padded[1, :3], mask[0, :5], mask[1, :3] = x[:5], x[5:], True, True
    bn = nn.BatchNorm(use_running_average=False, axis_name="b", momentum=0.0)
    v = bn.init(jax.random.key(0), padded[0])

    def body(xb, mb):
        y, upd = bn.apply(v, xb[0], mask=mb[0], mutable=["batch_stats"])
        return upd["batch_stats"]["mean"][None]

    mesh = Mesh(np.array(jax.devices()[:2]), ("b",))
    mean = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P("b"), P("b")), out_specs=P("b")))(
        jnp.asarray(padded), jnp.asarray(mask))
    observed = np.asarray(mean)[0]
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
print(f"observed running mean (momentum 0: the batch mean): {observed}")
print(f"expected (global mean of the 8 rows): {x.mean(0)}; mean of shard means: {(x[:5].mean(0) + x[5:].mean(0)) / 2}")
sys.exit(0 if np.allclose(observed, x.mean(0), atol=1e-4) else 1)
