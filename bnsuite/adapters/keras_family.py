"""The base of every adapter over a layer with the Keras BatchNormalization API (Keras 3 on its three backends,
tf_keras V2 and the TF1 V1 layer).

What these layers share lives here once: the declared facts they have in common (``keras_api_declaration``), the
Spec -> constructor conversion (adapters/conventions.py), building the layer, the state loop over gamma / beta / moving_mean / moving_variance, the backward skeleton that restores the moving
statistics a training call moves, the hyperparameters, the freeze idioms through the real `fit` machinery
(adapters/keras_fit.py) and the snippet. A new Keras-like adapter is a mapping of names plus what truly differs:

* ``_keras()``: the keras module (``keras`` or ``tf_keras``) whose Model/optimizers the freeze idioms use;
* ``_layer_class()``: the BatchNormalization class;
* ``_scope()``: the device scope every call runs in;
* ``_in`` / ``_to_numpy`` / ``_reduce_sum``: tensors in and out, and the sum the freeze loss uses;
* ``_grads(x, dy, training, params)``: the gradient of sum(y * dy) with the framework's autodiff
  (``_grads_tape`` is TensorFlow's, shared by keras-tensorflow and tf_keras);
* ``_numpy_dtype(var)`` / ``_var_dtype(var)`` / ``_tensor_dtype(t)``: a variable's dtype for assignment and by name,
  and an output tensor's;
* ``snippet_head`` / ``snippet_class``: the snippet's imports and the constructor it shows.
"""

from __future__ import annotations

import contextlib

import numpy as np

from bnsuite.adapters.base import BatchNormAdapter, Cited, Declaration, Grads, Unsupported, dtype_name
from bnsuite.adapters.conventions import (SlotState, build_shape, is_channels_last, kwargs_text, old_weight_kwargs,
                                          refuse_untracked)
from bnsuite.adapters.frameworks import FLOAT_DTYPES
from bnsuite.adapters.keras_fit import IDIOMS


def keras_api_declaration(init_src: str, bn_src: str, freeze: dict, **differing) -> Declaration:
    """What every Keras-API BatchNormalization declares alike (Keras 3, tf_keras V2 and V1), cited from the layer's
    `init_src` (its constructor) and `bn_src` (its call): the constructor defaults, no cumulative average and batch
    statistics only in training; `differing` holds the other fields. Each layer's freeze table stays whole with the
    layer (its idioms read in one place) and names the idioms of its adapter's freeze_idioms (adapters/keras_fit.py)."""
    return Declaration(
        default_eps=Cited(1e-3, f"{init_src}: __init__(epsilon=1e-3)"),
        default_momentum=Cited(0.99, f"{init_src}: __init__(momentum=0.99)"),
        default_channels_last=Cited(True, f"{init_src}: __init__(axis=-1)"),
        cumulative_average=Cited(False, f"{bn_src}: momentum is a float; no cumulative-average mode"),
        batch_stats_inference=Cited(None, f"{bn_src}: batch statistics only with training=True, which also updates "
                                          "the moving statistics"),
        freeze=freeze,
        **differing,
    )


# State slot -> the Keras layer attribute holding it.
KERAS_SLOTS = {"scale": "gamma", "offset": "beta", "mean": "moving_mean", "var": "moving_variance"}


class KerasLayerAdapter(SlotState, BatchNormAdapter):
    """One built Keras-API BatchNormalization layer, ``self.layer``."""

    freeze_idioms = IDIOMS

    framework_name = "keras"  # in refusal messages
    snippet_head = ""
    snippet_class = ""

    @classmethod
    def supported_dtypes(cls):
        # Every Keras-API layer computes 16-bit inputs in float32 and keeps float64 (see each declaration's precision).
        return FLOAT_DTYPES

    def __init__(self, spec):
        super().__init__(spec)
        self._kwargs = old_weight_kwargs(spec, self.framework_name)
        refuse_untracked(spec, self.framework_name)
        with self._build_scope():
            self.layer = self._layer_class()(dtype=spec.dtype, **self._kwargs)
            self.layer.build(self._build_input_shape())

    # -- what a family member names --------------------------------------------------------------------------------
    def _keras(self):
        raise NotImplementedError

    def _layer_class(self):
        raise NotImplementedError

    def _scope(self):
        return contextlib.nullcontext()

    def _build_scope(self):
        return self._scope()

    def _build_input_shape(self):
        return tuple(build_shape(self.spec))

    def _in(self, x):
        raise NotImplementedError

    def _to_numpy(self, t) -> np.ndarray:
        raise NotImplementedError

    def _reduce_sum(self, t):
        raise NotImplementedError

    def _grads(self, x, dy, training, params):
        raise NotImplementedError

    def _numpy_dtype(self, var):
        raise NotImplementedError

    def _var_dtype(self, var) -> str:
        raise NotImplementedError

    def _tensor_dtype(self, t) -> str:
        return self._var_dtype(t)

    # -- shared ------------------------------------------------------------------------------------------------------
    def _slot(self, name):
        return getattr(self.layer, KERAS_SLOTS[name])

    def _read(self, var):
        return self._to_numpy(var)

    def _write(self, var, value):
        var.assign(value.astype(self._numpy_dtype(var)))

    def _dtype(self, var):
        return self._var_dtype(var)

    def forward(self, x, training):
        with self._scope():
            y = self.layer(self._in(x)) if training is None else self.layer(self._in(x), training=training)
        self.last_output_dtype = self._tensor_dtype(y)
        return np.asarray(self._to_numpy(y), dtype=np.float64)

    def backward(self, x, dy, training):
        """Gradient of sum(y * dy) with the framework's own autodiff; the moving statistics are restored after."""
        lay = self.layer
        params = [w for w in (lay.gamma, lay.beta) if w is not None]
        saved = self.get_state()
        try:
            with self._scope():
                dx, dparams = self._grads(x, dy, training, params)
        finally:
            self.set_state(saved)
        f64 = lambda g: None if g is None else np.asarray(self._to_numpy(g), np.float64)
        named = dict(zip([id(w) for w in params], dparams))
        pick = lambda w: None if w is None else f64(named[id(w)])
        return Grads(f64(dx), pick(lay.gamma), pick(lay.beta))

    def _grads_tape(self, x, dy, training, params):
        """TensorFlow's tf.GradientTape over one call."""
        import tensorflow as tf

        xt, dyt = self._in(x), self._in(dy)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(self.layer(xt, training=training) * dyt)
        grads = tape.gradient(loss, [xt] + params)
        return grads[0], grads[1:]

    # -- edge inputs (suites/test_edge_inputs.py) --------------------------------------------------------------------
    def _mask_in(self, mask):
        raise NotImplementedError

    def _rebuild(self, x_shape, **options):
        """A fresh layer (initial state) with the spec's arguments and `options` over them, built for x_shape."""
        with self._build_scope():
            self.layer = self._layer_class()(dtype=self.spec.dtype, **{**self._kwargs, **options})
            self.layer.build(tuple(x_shape))

    def rebuild_with_axes(self, axes, x_shape):
        # Keras 3's BatchNormalization.__init__ does self.axis = int(axis) and refuses a list; tf_keras takes one.
        self._rebuild((None, *x_shape[1:]), axis=list(axes))

    def forward_masked(self, x, mask, training):
        # call(mask=...) takes the mask as it is: Keras 3 one dimension less than the input, tf_keras "a binary
        # tensor of shape broadcastable to inputs".
        with self._scope():
            y = self.layer(self._in(x), training=training, mask=self._mask_in(mask))
        return np.asarray(self._to_numpy(y), dtype=np.float64)

    def hyperparameters(self):
        lay = self.layer
        return {"eps": lay.epsilon, "momentum": lay.momentum,
                "channels_last": is_channels_last(lay.axis, self.spec.rank)}

    def set_trainable(self, trainable):
        self.layer.trainable = trainable

    def frozen_step(self, idiom, x, dy, lr):
        from bnsuite.adapters.keras_fit import fit_step

        if idiom not in type(self).declare().freeze:
            raise Unsupported(f"{self.id}: freeze idiom {idiom!r} is not declared for this layer")
        with self._scope():
            return fit_step(self._keras(), self, idiom, x, dy, lr, self._in, self._to_numpy, self._reduce_sum)

    def snippet(self):
        args = kwargs_text({**self._kwargs, "dtype": self.spec.dtype})
        return f"{self.snippet_head}bn = {self.snippet_class}({args})"


def tf_gpu_reason(device: str) -> str | None:
    """None when `device` is the CPU or TensorFlow sees a GPU, else why not."""
    if device == "cpu":
        return None
    import tensorflow as tf

    return None if tf.config.list_physical_devices("GPU") else "no GPU visible to TensorFlow"


def tf_dtype_name(t) -> str:
    """A TensorFlow tensor's or variable's dtype as NumPy spells it."""
    return dtype_name(t.dtype.base_dtype)
