"""Keras 3 on the jax and torch backends: `synchronized=True` is refused at construction (measured in a worker
with the backend set before keras is imported); on jax, keras.distribution.DataParallel over host devices."""

from __future__ import annotations

import dataclasses

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.adapters.replicas import (EPS, MOMENTUM, REPLICA_COUNTS, SHARD_CASES, STEPS, IdiomFacts,
                                       ReplicaDeclaration, ReplicaEngine)

_K3 = "keras/src/layers/normalization/batch_normalization.py"
_REFUSED = (f"{_K3}: BatchNormalization.__init__ raises ValueError('Argument synchronized=True is only supported "
            "with the TensorFlow backend.') when backend.backend() != 'tensorflow'")


class _KerasSyncRefused(ReplicaEngine):
    backend = "jax"
    timeout_s = 120.0

    @classmethod
    def declare(cls) -> ReplicaDeclaration:
        err = "error:ValueError"
        return ReplicaDeclaration(
            framework=f"keras ({cls.backend} backend)",
            default=Cited("local", f"{_K3}: statistics over the layer's input only"),
            idioms={"synchronized_true": Cited(
                IdiomFacts(how="BatchNormalization(synchronized=True)", normalizes=err,
                           running_stats="n/a: the constructor raises", replicas_equal=True,
                           gradient="n/a: the constructor raises", uneven=err, one_sample=err, empty=err),
                _REFUSED)})

    @classmethod
    def measure(self, p):
        import keras

        try:
            keras.layers.BatchNormalization(momentum=1.0 - MOMENTUM, epsilon=EPS, synchronized=True)
            outcome = "ok"
        except Exception as e:  # the declared refusal is the measurement
            outcome = f"error:{type(e).__name__}"
        keys = [f"synchronized_true/N{n}" for n in REPLICA_COUNTS] + [f"synchronized_true/{c}" for c in SHARD_CASES]
        return {f"{k}/outcome": np.array(outcome) for k in keys}


class KerasJaxSync(_KerasSyncRefused):
    backend = "jax"
    worker_env = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}


class KerasTorchSync(_KerasSyncRefused):
    backend = "torch"
    worker_env = {"KERAS_BACKEND": "torch"}


class KerasJaxReplicas(KerasJaxSync):
    """Keras 3 on jax also under keras.distribution.DataParallel over N host devices: the global batch is one array
    sharded over the devices, and the layer's reductions are XLA reductions over the whole array."""

    worker_env = {**KerasJaxSync.worker_env, "XLA_FLAGS": f"--xla_force_host_platform_device_count={max(REPLICA_COUNTS)}"}

    @classmethod
    def declare(cls) -> ReplicaDeclaration:
        base = super().declare()
        na = "n/a: DataParallel shards one global array evenly over the devices"
        idioms = {**base.idioms, "data_parallel": Cited(
            IdiomFacts(how="keras.distribution.set_distribution(DataParallel(devices)); the batch distributed with "
                           "distribute_tensor(x, get_data_layout)", normalizes="global", running_stats="global",
                       replicas_equal=True, gradient="global", uneven=na, one_sample=na, empty=na),
            "keras/src/distribution/distribution_lib.py: DataParallel lays the batch out as P('batch') and replicates "
            "the variables; keras/src/backend/jax/nn.py: moments reduces the whole (sharded) array, so XLA inserts the "
            "cross-device reduction: global statistics through sharding alone")}
        return dataclasses.replace(base, idioms=idioms)

    def measure(self, p):
        out = super().measure(p)
        import jax
        import keras

        shards_of = lambda a: np.stack([np.asarray(s.data, np.float64) for s in
                                        sorted(a.addressable_shards, key=lambda s: s.device.id)])
        for n in REPLICA_COUNTS:
            key = f"data_parallel/N{n}"
            try:
                dist = keras.distribution.DataParallel(devices=keras.distribution.list_devices("cpu")[:n])
                keras.distribution.set_distribution(dist)
                bn = keras.layers.BatchNormalization(momentum=1.0 - MOMENTUM, epsilon=EPS)
                bn.build((None, p["scale"].size))
                bn.set_weights([np.asarray(p[k], np.float32) for k in ("scale", "offset", "mean", "var")])
                put = lambda a: keras.distribution.distribute_tensor(np.asarray(a, np.float32),
                                                                     dist.get_data_layout(a.shape))
                tv = [v.value for v in bn.trainable_variables]
                ntv = [v.value for v in bn.non_trainable_variables]
                f = lambda x: bn.stateless_call(tv, ntv, x, training=True)[0]
                y, vjp = jax.vjp(f, put(p["xs"][0]))
                out[f"{key}/y"], out[f"{key}/dx"] = shards_of(y), shards_of(vjp(put(p["dy"]))[0])
                for step in range(max(STEPS)):
                    bn(put(p["xs"][step]), training=True)
                    if step + 1 in STEPS:
                        out[f"{key}/mean_k{step + 1}"] = shards_of(bn.moving_mean.value)
                        out[f"{key}/var_k{step + 1}"] = shards_of(bn.moving_variance.value)
                out[f"{key}/outcome"] = np.array("ok")
            except Exception as e:
                out[f"{key}/outcome"] = np.array(f"error:{type(e).__name__}")
        return out
