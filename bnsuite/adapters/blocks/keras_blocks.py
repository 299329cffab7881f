"""Keras blocks: Keras 3 (any backend), tf_keras (the TF2 layers) and the TF1 Keras layer (tf_keras with
TF_USE_LEGACY_KERAS=1): Dense, BatchNormalization, Dropout, ReLU, Activation("sigmoid"), Softmax(axis), trained with
the framework's SGD on its BinaryCrossentropy.

Layouts: a Keras Dense kernel is (in, units), the transpose of the canonical (units, in). BatchNormalization's
momentum weights the OLD value, so it receives 1 - canonical. Layers run one by one in eager mode, so every layer's
output is read; the training step runs them as one functional model with compile + train_on_batch.
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, Unsupported
from bnsuite.adapters.blocks import BlockDeclaration, Blocks

_K3 = "keras/src/layers/regularization/dropout.py"
_TFK = "tf_keras/src/layers/regularization/dropout.py"
_LOSSES = {"BinaryCrossentropy(from_logits=False)": "probabilities", "BinaryCrossentropy(from_logits=True)": "logits"}
# Every Keras backend clips the probabilities to [epsilon, 1 - epsilon] before the log: finite loss, and the clip's
# gradient (0 outside the interval) keeps the weights finite.
_AT_ONE = ({"BinaryCrossentropy(from_logits=False)": "finite"},
           "{bce}: binary_crossentropy clips output to [epsilon(), 1 - epsilon()] (1e-7) before tf.math.log / "
           "jnp.log / torch's binary_cross_entropy")

KERAS3_DECLARATION = BlockDeclaration(
    dropout_scaling=Cited("inverted", f"{_K3}: Dropout docstring 'Inputs not set to 0 are scaled up by 1 / (1 - rate)"
                                      "', call returns inputs unless training; keras/src/backend/<backend>/random.py: "
                                      "dropout (jax: select(mask, inputs / keep_prob, 0); tensorflow: "
                                      "tf.nn.experimental.stateless_dropout)"),
    bce_losses=Cited(_LOSSES, "keras/src/losses/losses.py: BinaryCrossentropy(from_logits=False) 'whether to "
                              "interpret y_pred as a tensor of logit values. By default, we assume that y_pred is "
                              "probabilities (i.e., values in [0, 1])'"),
    bce_at_probability_one=Cited(_AT_ONE[0], _AT_ONE[1].format(bce="keras/src/backend/<backend>/nn.py")),
)
# On TensorFlow, softmax caches its input on its output tensor (`_keras_logits`) and binary_crossentropy takes any
# cached `_keras_logits` as the logits: a one-unit softmax then trains like a sigmoid.
_SIGMOID_OF_INPUT = ("sigmoid-of-its-input", "{act}: softmax sets output._keras_logits = x ('Cache the logits to use "
                     "for crossentropy loss'); {bce}: _get_logits uses output._keras_logits as the logits whatever "
                     "activation cached it, so binary_crossentropy computes the sigmoid cross-entropy of the "
                     "softmax's input")
KERAS3_TF_DECLARATION = BlockDeclaration(
    dropout_scaling=KERAS3_DECLARATION.dropout_scaling, bce_losses=KERAS3_DECLARATION.bce_losses,
    one_unit_softmax_bce=Cited(_SIGMOID_OF_INPUT[0], _SIGMOID_OF_INPUT[1].format(
        act="keras/src/activations/activations.py: softmax", bce="keras/src/backend/tensorflow/nn.py: "
                                                                 "binary_crossentropy")),
    bce_at_probability_one=KERAS3_DECLARATION.bce_at_probability_one)
TF_KERAS_DECLARATION = BlockDeclaration(
    dropout_scaling=Cited("inverted", f"{_TFK}: Dropout docstring 'Inputs not set to 0 are scaled up by 1/(1 - rate)'"
                                      "; tensorflow/python/ops/nn_ops.py: dropout_v2 scales by 1 / (1 - rate)"),
    bce_losses=Cited(_LOSSES, "tf_keras/src/losses.py: BinaryCrossentropy(from_logits=False) 'whether to interpret "
                              "y_pred as a tensor of logit values. By default, we assume that y_pred contains "
                              "probabilities (i.e., values in [0, 1])'"),
    one_unit_softmax_bce=Cited(_SIGMOID_OF_INPUT[0], _SIGMOID_OF_INPUT[1].format(
        act="tf_keras/src/backend.py: softmax", bce="tf_keras/src/backend.py: binary_crossentropy")),
    bce_at_probability_one=Cited(_AT_ONE[0], _AT_ONE[1].format(bce="tf_keras/src/backend.py")),
)


class _KerasBlocks(Blocks):
    def _keras(self):
        raise NotImplementedError

    def _bn_class(self, keras):
        return keras.layers.BatchNormalization

    def __init__(self, spec, weights):
        super().__init__(spec, weights)
        keras = self.keras = self._keras()
        L = keras.layers
        self.layers, width = [], spec.in_features
        for op in spec.ops:
            if op[0] == "dense":
                layer = L.Dense(op[1], dtype=spec.dtype, kernel_initializer="zeros")  # set from `weights` below
                layer.build((None, width))
                width = op[1]
            elif op[0] == "bn":
                layer = self._bn_class(keras)(axis=-1, momentum=1.0 - spec.momentum, epsilon=spec.eps,
                                              dtype=spec.dtype)
                layer.build((None, width))
            elif op[0] == "relu":
                layer = L.ReLU(dtype=spec.dtype)
            elif op[0] == "sigmoid":
                layer = L.Activation("sigmoid", dtype=spec.dtype)
            elif op[0] == "softmax":
                layer = L.Softmax(axis=op[1], dtype=spec.dtype)
            elif op[0] == "dropout":
                layer = None  # made per forward with its seed
            self.layers.append(layer)
        self._by = {op[0]: self.layers[i] for i, op in enumerate(spec.ops)}
        if "dense" in self._by:
            self._by["dense"].set_weights([weights["dense.kernel"].T, weights["dense.bias"]])
        if "bn" in self._by:
            self._by["bn"].set_weights([weights[k] for k in ("bn.scale", "bn.offset", "bn.mean", "bn.var")])

    def _dropout(self, seed):
        return self.keras.layers.Dropout(self.spec.rate, seed=seed, dtype=self.spec.dtype)

    def _np(self, t):
        return np.asarray(self.keras.ops.convert_to_numpy(t), np.float64)

    def forward(self, x, training, seed=0):
        h = np.asarray(x, self.spec.dtype)
        outs = []
        for op, layer in zip(self.spec.ops, self.layers):
            if op[0] == "dropout":
                layer = self._dropout(seed)
            h = layer(h, training=training) if op[0] in ("bn", "dropout") else layer(h)
            outs.append(self._np(h))
        return outs

    def weights(self):
        out = {}
        if "dense" in self._by:
            k, b = self._by["dense"].get_weights()
            out["dense.kernel"], out["dense.bias"] = np.asarray(k, np.float64).T.copy(), np.asarray(b, np.float64)
        if "bn" in self._by:
            vals = self._by["bn"].get_weights()
            out.update({k: np.asarray(v, np.float64) for k, v in zip(("bn.scale", "bn.offset", "bn.mean", "bn.var"),
                                                                      vals)})
        return out

    def _model(self, seed=0):
        keras = self.keras
        inp = keras.Input((self.spec.in_features,), dtype=self.spec.dtype)
        h = inp
        for op, layer in zip(self.spec.ops, self.layers):
            h = (self._dropout(seed) if op[0] == "dropout" else layer)(h)
        return keras.Model(inp, h)

    def sgd_step(self, x, target, loss, lr):
        keras = self.keras
        takes = self.declaration.bce_losses.value.get(loss)
        if takes is None:
            raise Unsupported(f"keras: no loss {loss!r}")
        model = self._model()
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr),
                      loss=keras.losses.BinaryCrossentropy(from_logits=loss.endswith("from_logits=True)")))
        value = model.train_on_batch(np.asarray(x, self.spec.dtype), np.asarray(target, self.spec.dtype))
        return float(np.asarray(value[0] if isinstance(value, (list, tuple)) else value))


class Keras3Blocks(_KerasBlocks):
    declaration = KERAS3_DECLARATION

    def _keras(self):
        import keras

        return keras

    def probe_model(self):
        return self._model()


class Keras3TensorFlowBlocks(Keras3Blocks):
    declaration = KERAS3_TF_DECLARATION


class TfKerasBlocks(_KerasBlocks):
    declaration = TF_KERAS_DECLARATION

    def _keras(self):
        import tf_keras

        return tf_keras

    def _np(self, t):
        return np.asarray(t.numpy(), np.float64)

    def probe_model(self):
        raise Unsupported("bnsuite.probe takes Keras 3 models, not tf_keras ones")


class Tf1KerasBlocks(TfKerasBlocks):
    """The TF1 BatchNormalization layer (tf.compat.v1.keras, TF_USE_LEGACY_KERAS=1) among tf_keras layers."""

    def _bn_class(self, keras):
        import tensorflow as tf

        return tf.compat.v1.keras.layers.BatchNormalization
