"""The TF1 layer tf.compat.v1.keras.layers.BatchNormalization silently drops synchronized=True: under a
MirroredStrategy over 2 logical CPUs each replica normalizes with its own shard. Exit 1 while dropped, 0 once the
replicas get the global statistics, 2 on any other error."""
import importlib
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"

try:
    import numpy as np
    import tensorflow as tf
    print(f"versions: tensorflow {tf.__version__}, tf_keras {importlib.import_module('tf_keras').__version__}, numpy {np.__version__}")

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    x = (np.random.default_rng(0).standard_normal((8, 3)) + np.repeat([0.0, 3.0], 4)[:, None]).astype(np.float32)
    strat = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    with strat.scope():
        bn = tf.compat.v1.keras.layers.BatchNormalization(synchronized=True, epsilon=1e-3)
        bn.build((None, 3))
    parts = strat.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(x[4 * ctx.replica_id_in_sync_group:4 * ctx.replica_id_in_sync_group + 4]))
    y = strat.run(tf.function(lambda xr: bn(xr, training=True)), args=(parts,))
    observed = np.concatenate([v.numpy() for v in strat.experimental_local_results(y)])
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
expected = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3)
print(f"observed replica 1 first row: {observed[4]}")
print(f"expected (global statistics): {expected[4]}")
sys.exit(0 if np.allclose(observed, expected, atol=1e-4) else 1)
