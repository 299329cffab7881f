"""Keras 3 on the jax and torch backends: `synchronized=True` is refused at construction (measured in a worker
with the backend set before keras is imported). Keras' own multi-device path on these backends
(keras.distribution.DataParallel) is not measured here."""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.adapters.replicas import (EPS, MOMENTUM, REPLICA_COUNTS, SHARD_CASES, IdiomFacts, ReplicaDeclaration,
                                       ReplicaEngine)

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
