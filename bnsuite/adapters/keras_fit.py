"""Freeze idioms for Keras-API layers (Keras 3 and tf_keras), with a real optimizer step through `fit` machinery.

An idiom freezes the BatchNormalization layer the way users do and then:
1. runs the forward pass the idiom names: a direct call `bn(x, training=...)` for the `trainable_false_training_*`
   idioms, or the forward pass `fit` runs (`model(x, training=True)`) for the fit idioms;
2. takes ONE real optimizer step with `train_on_batch` (SGD, loss = sum(y * dy)) on a one-layer model whose `call`
   passes the idiom's `training` argument to the layer ("omit" leaves it out, so it inherits fit's training=True).
The suite compares the state before 1 with the state after 2.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bnsuite.adapters.base import FreezeIdiom


class Recipe(NamedTuple):
    """How a Keras freeze idiom freezes the layer, read alike by the lone layer (fit_step) and the networks."""

    trainable: bool  # layer.trainable
    training: bool | str  # the training argument of the direct call / of the call inside the model ("omit": none)
    direct: bool  # a direct call bn(x, training=...) instead of the forward pass fit runs
    model: str = "subclassed"  # the model fit trains: "subclassed" (its call passes `training`) or "functional"
    module_eval: bool = False  # the torch backend's module.eval() on the model before the step


# The freeze idioms of every Keras-API layer (Keras 3, tf_keras V2 and V1); on the torch backend, TORCH_IDIOMS.
IDIOMS = {
    "trainable_false_training_true": FreezeIdiom(Recipe(False, True, True)),
    "trainable_false_training_false": FreezeIdiom(Recipe(False, False, True)),
    "trainable_false_training_omitted": FreezeIdiom(Recipe(False, "omit", True)),
    "trainable_false_fit": FreezeIdiom(Recipe(False, "omit", False)),
    "subclassed_training_false_fit": FreezeIdiom(
        Recipe(True, False, False), network="the network is a functional model; the subclassed-model form of the "
                                            "idiom is checked on a lone layer by suites/test_freeze.py"),
    "functional_training_false_fit": FreezeIdiom(Recipe(True, False, False, model="functional")),
}
TORCH_IDIOMS = {**IDIOMS, "torch_module_eval": FreezeIdiom(Recipe(True, "omit", False, module_eval=True))}


def _call(bn, x, training):
    return bn(x) if training == "omit" else bn(x, training=training)


def fit_step(K, adapter, idiom: str, x: np.ndarray, dy: np.ndarray, lr: float, to_tensor, to_numpy,
             reduce_sum, jit_compile=None) -> np.ndarray:
    """K is the keras module (keras or tf_keras); adapter exposes .layer and its class the freeze_idioms table.
    `jit_compile` is passed to model.compile where given (None: the framework's default)."""
    recipe = type(adapter).freeze_recipe(idiom)
    trainable, training, direct = recipe.trainable, recipe.training, recipe.direct
    bn = adapter.layer
    bn.trainable = trainable

    class OneLayer(K.Model):
        def __init__(self):
            super().__init__()
            self.bn = bn

        def call(self, inputs, training=None):
            return _call(self.bn, inputs, recipe.training)

    if recipe.model == "functional":
        # The functional-API idiom: the layer's training argument is recorded when the model is built.
        inputs = K.Input(shape=tuple(x.shape[1:]), dtype=adapter.spec.dtype)
        model = K.Model(inputs, _call(bn, inputs, training))
    else:
        model = OneLayer()
    if recipe.module_eval:
        model.eval()  # the torch idiom; Keras resolves `training` from its own call context instead
    y = _call(bn, to_tensor(x), training) if direct else model(to_tensor(x), training=True)
    model.compile(optimizer=K.optimizers.SGD(learning_rate=lr), loss=lambda t, p: reduce_sum(t * p),
                  **({} if jit_compile is None else {"jit_compile": jit_compile}))
    if recipe.module_eval:
        model.eval()
    model.train_on_batch(to_tensor(x), to_tensor(dy))
    return np.asarray(to_numpy(y), np.float64)
