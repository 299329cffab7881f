"""Freeze idioms for Keras-API layers (Keras 3 and tf_keras), with a real optimizer step through `fit` machinery.

An idiom freezes the BatchNormalization layer the way users do and then:
1. runs the forward pass the idiom names: a direct call `bn(x, training=...)` for the `trainable_false_training_*`
   idioms, or the forward pass `fit` runs (`model(x, training=True)`) for the fit idioms;
2. takes ONE real optimizer step with `train_on_batch` (SGD, loss = sum(y * dy)) on a one-layer model whose `call`
   passes the idiom's `training` argument to the layer ("omit" leaves it out, so it inherits fit's training=True).
The suite compares the state before 1 with the state after 2.
"""

from __future__ import annotations

import numpy as np

# idiom -> (layer.trainable, training argument of the direct call / of the call inside the model, direct call?)
IDIOMS = {
    "trainable_false_training_true": (False, True, True),
    "trainable_false_training_false": (False, False, True),
    "trainable_false_training_omitted": (False, "omit", True),
    "trainable_false_fit": (False, "omit", False),
    "subclassed_training_false_fit": (True, False, False),
    "functional_training_false_fit": (True, False, False),
    "torch_module_eval": (True, "omit", False),
}


def _call(bn, x, training):
    return bn(x) if training == "omit" else bn(x, training=training)


def fit_step(K, adapter, idiom: str, x: np.ndarray, dy: np.ndarray, lr: float, to_tensor, to_numpy,
             reduce_sum) -> np.ndarray:
    """K is the keras module (keras or tf_keras); adapter exposes .layer."""
    from bnsuite.adapters.base import Unsupported

    if idiom not in IDIOMS:
        raise Unsupported(f"{adapter.id}: unknown freeze idiom {idiom!r}")
    trainable, training, direct = IDIOMS[idiom]
    bn = adapter.layer
    bn.trainable = trainable

    class OneLayer(K.Model):
        def __init__(self):
            super().__init__()
            self.bn = bn

        def call(self, inputs, training=None):
            return _call(self.bn, inputs, IDIOMS[idiom][1])

    if idiom == "functional_training_false_fit":
        # The functional-API idiom: the layer's training argument is recorded when the model is built.
        inputs = K.Input(shape=tuple(x.shape[1:]), dtype=adapter.spec.dtype)
        model = K.Model(inputs, bn(inputs, training=False))
    else:
        model = OneLayer()
    if idiom == "torch_module_eval":
        model.eval()  # the torch idiom; Keras resolves `training` from its own call context instead
    y = _call(bn, to_tensor(x), training) if direct else model(to_tensor(x), training=True)
    model.compile(optimizer=K.optimizers.SGD(learning_rate=lr), loss=lambda t, p: reduce_sum(t * p))
    if idiom == "torch_module_eval":
        model.eval()
    model.train_on_batch(to_tensor(x), to_tensor(dy))
    return np.asarray(to_numpy(y), np.float64)
