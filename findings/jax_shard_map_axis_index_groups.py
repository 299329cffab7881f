"""flax.linen.BatchNorm(axis_name, axis_index_groups) runs under jax.pmap but raises a bare NotImplementedError under
jax.shard_map. Exit 1 while shard_map refuses, 0 once it computes group statistics, 2 on any other error."""
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

try:
    import numpy as np
    import flax.linen as nn
    import jax
    from jax.sharding import Mesh, PartitionSpec as P
    import flax
    print(f"versions: flax {flax.__version__}, jax {jax.__version__}, numpy {np.__version__}")

    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    bn = nn.BatchNorm(use_running_average=False, axis_name="b", axis_index_groups=[[0, 1], [2, 3]])
    v = bn.init(jax.random.key(0), x[:2])
    f = lambda xb: bn.apply(v, xb, mutable=["batch_stats"])[0]
    jax.pmap(f, axis_name="b")(x.reshape(4, 2, 3))  # pmap: fine
    mesh = Mesh(np.array(jax.devices()), ("b",))
    try:
        jax.jit(jax.shard_map(f, mesh=mesh, in_specs=P("b"), out_specs=P("b")))(x)
        observed = "ok"
    except NotImplementedError as e:
        observed = repr(e)
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
print(f"observed under jax.shard_map: {observed}")
print("expected: statistics pooled within each group of devices, as under jax.pmap")
sys.exit(0 if observed == "ok" else 1)
