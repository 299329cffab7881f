"""TensorFlow multi-replica engines: Keras 3 (tensorflow backend) and tf_keras BatchNormalization with
synchronized=False and True under tf.distribute.MirroredStrategy over N logical CPU devices (configured before
TensorFlow initializes, in the worker). Each replica gets its own shard through
experimental_distribute_values_from_function, so uneven and empty shards are expressible; per-replica running
statistics are read with experimental_local_results.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.adapters.replicas import (EPS, MOMENTUM, REPLICA_COUNTS, SHARD_CASES, STEPS, IdiomFacts,
                                       ReplicaDeclaration, ReplicaEngine, even_sizes, shards)

_K3 = "keras/src/layers/normalization/batch_normalization.py"
_K3_SYNC = ("keras/src/backend/tensorflow/nn.py: moments(synchronized=True) -> _compute_moments_sync all-reduces "
            "sum, sum of squares and count over tf.distribute.get_replica_context()")
_TFK = "tf_keras/src/layers/normalization/batch_normalization.py"
_TFK_SYNC = (f"{_TFK}: BatchNormalizationBase._sync_calculate_mean_and_var all-reduces local_sum, local_squared_sum "
             "and local_count (ReduceOp.SUM) and divides by the global count")
_LOCAL_VARS = ("the moving statistics are per-replica variables updated by each replica's assign in its own replica "
               "context: each keeps its own shard's statistics")
_ALLREDUCE_GRAD = "tf.distribute's all_reduce is differentiable (its gradient all-reduces the cotangents)"


def _idioms(src_sync: str, src_layer: str, local_vars_src: str) -> dict:
    return {
        "mirrored_synchronized_false": Cited(
            IdiomFacts(how="MirroredStrategy; BatchNormalization(synchronized=False) (the default)",
                       normalizes="local", running_stats="local", replicas_equal=False, gradient="local",
                       uneven="ok", one_sample="ok", empty="ok"),
            f"{src_layer}: synchronized docstring 'If False, each replica uses its own local batch statistics'; "
            f"{local_vars_src}"),
        "mirrored_synchronized_true": Cited(
            IdiomFacts(how="MirroredStrategy; BatchNormalization(synchronized=True)", normalizes="global",
                       running_stats="global", replicas_equal=True, gradient="global",
                       uneven="ok", one_sample="ok", empty="ok"),
            f"{src_sync}; count-weighted, so uneven and empty shards get the global statistics; {_ALLREDUCE_GRAD}"),
    }


class _TfMirrored(ReplicaEngine):
    worker_env = {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    timeout_s = 300.0

    def _keras(self):
        raise NotImplementedError

    def _layer(self, keras, synchronized: bool):
        return keras.layers.BatchNormalization(momentum=1.0 - MOMENTUM, epsilon=EPS, synchronized=synchronized)

    def measure(self, p):
        import tensorflow as tf

        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(cpus[0],
                                                   [tf.config.LogicalDeviceConfiguration()] * max(REPLICA_COUNTS))
        keras = self._keras()
        out: dict[str, np.ndarray] = {}
        for idiom, cited in self.declare().idioms.items():
            sync = idiom.endswith("_true")
            for n in REPLICA_COUNTS:
                self._measure_steps(tf, keras, out, f"{idiom}/N{n}", sync, n, p)
            for case, sizes in SHARD_CASES.items():
                self._measure_shards(tf, keras, out, f"{idiom}/{case}", sync, sizes, p)
        for sync in (False, True):
            # momentum 1 (Keras 0): the running variance after one step IS the batch variance estimate
            bn = keras.layers.BatchNormalization(momentum=0.0, epsilon=EPS, synchronized=sync)
            bn.build(p["x4"].shape)
            bn.set_weights([np.asarray(p[k], np.float32) for k in ("scale", "offset", "mean", "var")])
            bn(tf.constant(p["x4"], tf.float32), training=True)
            out[f"no_strategy/{sync}/var"] = np.asarray(bn.get_weights()[3], np.float64)
            out[f"no_strategy/{sync}/hard_y"] = np.asarray(bn(tf.constant(p["hard4"], tf.float32), training=True),
                                                         np.float64)
        return out

    def _setup(self, tf, keras, sync, n, p):
        strat = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)],
                                               cross_device_ops=tf.distribute.ReductionToOneDevice())
        with strat.scope():
            bn = self._layer(keras, sync)
            bn.build((None, p["scale"].size))
            bn.set_weights([np.asarray(p[k], np.float32) for k in ("scale", "offset", "mean", "var")])

        @tf.function
        def run(x, dy):
            def step(xr, dyr):
                with tf.GradientTape() as tape:
                    tape.watch(xr)
                    y = bn(xr, training=True)
                    loss = tf.reduce_sum(y * dyr)
                return y, tape.gradient(loss, xr)
            return strat.run(step, args=(x, dy))

        def dist(parts):
            return strat.experimental_distribute_values_from_function(
                lambda ctx: tf.constant(np.asarray(parts[ctx.replica_id_in_sync_group], np.float32)))

        def local(t):
            return [np.asarray(v, np.float64) for v in strat.experimental_local_results(t)]

        def stats():
            var = lambda v: v.value if not callable(getattr(v, "value", None)) else v
            return local(var(bn.moving_mean)), local(var(bn.moving_variance))
        return run, dist, local, stats

    def _measure_steps(self, tf, keras, out, key, sync, n, p):
        try:
            run, dist, local, stats = self._setup(tf, keras, sync, n, p)
            for step in range(max(STEPS)):
                y, dx = run(dist(shards(p["xs"][step], even_sizes(n))), dist(shards(p["dy"], even_sizes(n))))
                if step == 0:
                    out[f"{key}/y"], out[f"{key}/dx"] = np.stack(local(y)), np.stack(local(dx))
                if step + 1 in STEPS:
                    mean, var = stats()
                    out[f"{key}/mean_k{step + 1}"], out[f"{key}/var_k{step + 1}"] = np.stack(mean), np.stack(var)
            out[f"{key}/outcome"] = np.array("ok")
        except Exception as e:  # a refusal is a measurement
            out[f"{key}/outcome"] = np.array(f"error:{type(e).__name__}")

    def _measure_shards(self, tf, keras, out, key, sync, sizes, p):
        try:
            run, dist, local, stats = self._setup(tf, keras, sync, len(sizes), p)
            y, _ = run(dist(shards(p["xs"][0], sizes)), dist(shards(p["dy"], sizes)))
            for r, yr in enumerate(local(y)):
                out[f"{key}/y{r}"] = yr
            mean, var = stats()
            out[f"{key}/mean"], out[f"{key}/var"] = np.stack(mean), np.stack(var)
            out[f"{key}/outcome"] = np.array("ok")
        except Exception as e:
            out[f"{key}/outcome"] = np.array(f"error:{type(e).__name__}")


_ONE_PASS_NO_STRATEGY = ("tf.distribute.get_replica_context() returns the DEFAULT replica context outside any "
                         "strategy (never None), so the synchronized path runs anyway: all_reduce over one replica "
                         "and variance = maximum(E[x^2] - E[x]^2, 0)")


def _declaration(framework: str, src_layer: str, src_sync: str, local_vars_src: str, *, estimator_false: Cited,
                 estimator_true: Cited, variance_false: Cited) -> ReplicaDeclaration:
    """A Keras BatchNormalization with a `synchronized` argument (False by default): its two idioms, and the layer
    without a strategy, where synchronized=True still takes the one-pass all-reduce path."""
    return ReplicaDeclaration(
        framework=framework,
        default=Cited("local", f"{src_layer}: synchronized=False by default"),
        idioms=_idioms(src_sync, src_layer, local_vars_src),
        without_strategy={"estimator:False": estimator_false, "estimator:True": estimator_true,
                          "variance:False": variance_false,
                          "variance:True": Cited("one-pass-clamped", f"{src_sync}; {_ONE_PASS_NO_STRATEGY}")})


class KerasTensorFlowReplicas(_TfMirrored):
    worker_env = {**_TfMirrored.worker_env, "KERAS_BACKEND": "tensorflow"}

    @classmethod
    def declare(cls) -> ReplicaDeclaration:
        tf_moments = "keras/src/backend/tensorflow/nn.py: moments"
        return _declaration(
            "keras (tensorflow backend)", _K3, _K3_SYNC,
            f"{_K3}: moving_mean/moving_variance are plain add_weight variables (MirroredVariable); {_LOCAL_VARS}",
            estimator_false=Cited("biased", f"{_K3}: the moving variance is fed the biased batch variance"),
            estimator_true=Cited("biased", f"{_K3_SYNC}: divides by the count"),
            variance_false=Cited("two-pass", f"{tf_moments} -> tf.nn.moments: mean of squared_difference"))

    def _keras(self):
        import keras

        return keras


class TfKerasReplicas(_TfMirrored):
    code_path = "non-fused"  # rank-2 batches (and synchronized=True, which sets fused=False) take the non-fused path

    @classmethod
    def declare(cls) -> ReplicaDeclaration:
        return _declaration(
            "tf_keras", _TFK, _TFK_SYNC,
            f"{_TFK}: _add_tower_local_variable creates the moving statistics with synchronization ON_READ, "
            f"aggregation MEAN; {_LOCAL_VARS}",
            estimator_false=Cited("unbiased", f"{_TFK}: rank-4 input takes the fused kernel "
                                              "(tensorflow/core/kernels/fused_batch_norm_op.cc: unbiased)"),
            estimator_true=Cited("biased", f"{_TFK}: BatchNormalizationBase.__init__ sets fused = False when "
                                           "synchronized, and the non-fused path stores the biased variance, though "
                                           "the docstring says 'Setting `synchronized` has no impact when the model "
                                           "is trained without specifying any distribution strategy'"),
            variance_false=Cited("two-pass", "tensorflow/core/kernels/fused_batch_norm_op.cc: x - mean first"))

    def _keras(self):
        import tf_keras

        return tf_keras


class Tf1KerasReplicas(_TfMirrored):
    """The TF1 layer (tf.compat.v1.keras.layers.BatchNormalization, tf_keras' V1 class) under MirroredStrategy."""

    worker_env = {**_TfMirrored.worker_env, "TF_USE_LEGACY_KERAS": "1"}
    code_path = "non-fused"

    @classmethod
    def declare(cls) -> ReplicaDeclaration:
        v1 = "tf_keras/src/layers/normalization/batch_normalization_v1.py: BatchNormalization(BatchNormalizationBase)"
        local_vars = f"{_TFK}: _add_tower_local_variable (ON_READ, MEAN); {_LOCAL_VARS}"
        idioms = _idioms(_TFK_SYNC, _TFK, local_vars)
        idioms["mirrored_synchronized_true"] = Cited(
            dataclasses.replace(idioms["mirrored_synchronized_false"].value,
                                how="MirroredStrategy; tf.compat.v1.keras.layers.BatchNormalization(synchronized=True)"),
            f"{v1}.__init__: kwargs.pop('synchronized', None) ('synchronized not implemented in V1'): the argument "
            f"is silently dropped and each replica keeps its own statistics; {local_vars}")
        return ReplicaDeclaration(
            framework="tf.compat.v1.keras (TF1 layer)",
            default=Cited("local", f"{v1}: synchronized=False by default"), idioms=idioms)

    def _keras(self):
        import tensorflow as tf

        return tf.compat.v1.keras
