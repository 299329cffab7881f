"""Keras-API networks: one functional-model implementation for Keras 3 (tensorflow, jax and torch backends) and
tf_keras (the TF2 layer; for tf1-keras the BN is tf.compat.v1.keras.layers.BatchNormalization, the V1 layer).

Layout conversions from the canonical weights:
* Conv2D kernel (kh, kw, in, out) = canonical (out, in, kh, kw).transpose(2, 3, 1, 0);
* Dense kernel (in, out) = canonical (out, in).T;
* BatchNormalization weights [gamma, beta, moving_mean, moving_variance] = scale, offset, mean, var;
* momentum: Keras weights the OLD value, so it receives 1 - canonical momentum (as adapters/keras3.py does);
* data_format / BN axis / concat axis follow `channels_last` (channels_last: NHWC, axis -1).

Training: `sgd_step` runs `model.train_on_batch` with keras.optimizers.SGD and loss "mse" (mean over every element).
The freeze idioms whose layer-level form is a direct call with an explicit (or omitted) `training` argument
(trainable_false_training_true/false/omitted) run a custom training step instead: `model(x, training=...)` under the
backend's own gradient (tf.GradientTape, jax.value_and_grad over stateless_call, torch autograd) and
`optimizer.apply`, because `fit` always passes training=True.
"""

from __future__ import annotations

import contextlib

import numpy as np

from bnsuite.adapters.base import Cited, Unsupported, by_version
from bnsuite.adapters.nets import HWIO, Network
from bnsuite.adapters.nets.reference_net import IMAGE, IN_CHANNELS, plan



def _key(name: str) -> str:
    return name.replace(".", "_")


_INIT_ARGS = {"conv": ("kernel_initializer", "bias_initializer"), "dense": ("kernel_initializer", "bias_initializer"),
              "bn": ("gamma_initializer", "beta_initializer", "moving_mean_initializer", "moving_variance_initializer")}


def _native(kind: str, name: str, weights: dict, dtype: str) -> list:
    """The layer's weights in Keras' order and layout (set_weights' list)."""
    if kind == "conv":
        return [weights[f"{name}.kernel"].transpose(2, 3, 1, 0).astype(dtype), weights[f"{name}.bias"].astype(dtype)]
    if kind == "dense":
        return [weights[f"{name}.kernel"].T.astype(dtype), weights[f"{name}.bias"].astype(dtype)]
    return [weights[f"{name}.{s}"].astype(dtype) for s in ("scale", "offset", "mean", "var")]


def _given(value):
    """A Keras initializer returning `value` (a JAX array: Keras takes it as it is)."""
    return lambda shape, dtype=None, **kwargs: value


class KerasNet(Network):
    weight_layout = Cited(HWIO, "keras/src/layers/convolutional/base_conv.py BaseConv.build: kernel_shape = kernel_size "
                                "+ (input_channel // groups, filters); keras/src/layers/core/dense.py Dense.build: "
                                "kernel_shape = (input_shape[-1], units); tf_keras/src/layers/convolutional/base_conv.py "
                                "and core/dense.py ([last_dim, units]) the same")

    def __init__(self, adapter_cls, arch, weights, *, dtype, device, channels_last, eps, momentum, bn_idiom, recipe):
        adapter_id = adapter_cls.id
        keras3 = bool(getattr(adapter_cls, "backend", ""))  # Keras 3 adapters name their backend; tf_keras ones none
        if keras3:
            import keras as K

            self.backend = K.backend.backend()
            if adapter_cls.backend != self.backend:
                raise Unsupported(f"this process runs keras on the {self.backend!r} backend, not {adapter_id!r}")
            bn_cls = K.layers.BatchNormalization
            self.to_numpy = lambda t: np.asarray(K.ops.convert_to_numpy(t), np.float64)
        else:
            import tf_keras as K

            self.backend = "tf_keras"
            bn_cls = adapter_cls._layer_class(None)  # the adapter's own layer class (V2 or the V1 layer)
            self.to_numpy = lambda t: np.asarray(t.numpy() if hasattr(t, "numpy") else t, np.float64)
        # The idiom's recipe from the adapter's one table of Keras freeze idioms (adapters/keras_fit.py).
        self.recipe = recipe
        if recipe is not None and recipe.module_eval and self.backend != "torch":
            raise Unsupported(f"{bn_idiom} exists on the Keras torch backend only")
        self.K, self.dtype, self.bn_idiom, self.adapter_id = K, dtype, bn_idiom, adapter_id
        if keras3:
            self.reported_loss = by_version(
                "keras",
                ("<3.15", Cited("running-mean", "keras/src/backend/*/trainer.py: train_on_batch returns the loss "
                                "tracker's mean since the last metric reset, which only fit/evaluate reset (fixed by "
                                "keras-team/keras#22617, commit bfe3412265, first released in 3.15.0)")),
                (">=3.15", Cited("batch", "keras/src/backend/*/trainer.py: train_on_batch calls reset_metrics() "
                                 "first (keras-team/keras#22617)")))
        self._device = device
        fmt = "channels_last" if channels_last else "channels_first"
        axis = -1 if channels_last else 1
        L = K.layers
        self.layers = {}
        # training=False baked into the model for the idiom that fits with BN in inference mode
        functional = self.recipe is not None and self.recipe.model == "functional"
        bn_kw = {"training": self.recipe.training} if functional else {}
        # Every weight is set from `weights` below: zeros spare the random initializers. On JAX the layers are created
        # with those values instead, since every random draw, and every zeros or ones fill, compiles a program per
        # weight shape there.
        def init(kind, name):
            if self.backend != "jax":
                return {} if kind == "bn" else {"kernel_initializer": "zeros", "bias_initializer": "zeros"}
            import jax

            values = [jax.device_put(a) for a in _native(kind, name, weights, dtype)]
            return {arg: _given(v) for arg, v in zip(_INIT_ARGS[kind], values)}

        def bn_layer(name, c):
            lay = bn_cls(axis=axis, epsilon=eps, momentum=1.0 - momentum, dtype=dtype, name=_key(name),
                         **init("bn", name))
            self.layers[name] = ("bn", lay)
            return lay

        with self._scope():
            shape = (*IMAGE, IN_CHANNELS) if channels_last else (IN_CHANNELS, *IMAGE)
            inputs = K.Input(shape=shape, dtype=dtype)
            h = inputs
            for op in plan(arch):
                kind = op[0]
                if kind == "conv":
                    lay = L.Conv2D(op[3], op[4], padding="same", data_format=fmt, dtype=dtype, name=_key(op[1]),
                                   **init("conv", op[1]))
                    self.layers[op[1]] = ("conv", lay)
                    h = lay(h)
                elif kind == "bn":
                    h = bn_layer(op[1], op[2])(h, **bn_kw)
                elif kind == "relu":
                    h = L.ReLU(dtype=dtype)(h)
                elif kind == "gap":
                    h = L.GlobalAveragePooling2D(data_format=fmt, dtype=dtype)(h)
                elif kind == "dense":
                    lay = L.Dense(op[3], dtype=dtype, name=_key(op[1]), **init("dense", op[1]))
                    self.layers[op[1]] = ("dense", lay)
                    h = lay(h)
                elif kind == "block":
                    a = bn_layer(f"{op[1]}.bn", op[2])(h, **bn_kw)
                    conv = L.Conv2D(op[3], 1, padding="same", data_format=fmt, dtype=dtype,
                                    name=_key(f"{op[1]}.conv"), **init("conv", f"{op[1]}.conv"))
                    self.layers[f"{op[1]}.conv"] = ("conv", conv)
                    h = L.Concatenate(axis=axis, dtype=dtype)([h, conv(L.ReLU(dtype=dtype)(a))])
            self.model = K.Model(inputs, h)
            for name, (kind, lay) in self.layers.items():
                lay.set_weights(_native(kind, name, weights, dtype))
            if self.recipe is not None and not self.recipe.trainable:
                for name, (kind, lay) in self.layers.items():
                    if kind == "bn":
                        lay.trainable = False
        self._compiled_lr = None

    def _scope(self):
        if self.backend in ("tensorflow", "jax"):
            return self.K.device("gpu:0" if self._device == "gpu" else "cpu:0")
        if self.backend == "tf_keras":
            import tensorflow as tf

            return tf.device("/GPU:0" if self._device == "gpu" else "/CPU:0")
        return contextlib.nullcontext()  # keras-torch: see adapters/keras3.py on device scopes and trainable

    def code_path(self) -> str:
        bn = next(lay for kind, lay in self.layers.values() if kind == "bn")
        if self.backend == "tf_keras":
            return "fused" if bn.fused else "non-fused"
        return "default"

    # -- compute --------------------------------------------------------------------------------------------------------
    def _x(self, x):
        if self.backend == "tf_keras":
            import tensorflow as tf

            return tf.convert_to_tensor(np.asarray(x), dtype=self.dtype)
        return self.K.ops.convert_to_tensor(np.asarray(x), dtype=self.dtype)

    def forward(self, x, training):
        with self._scope():
            if not training and self.backend != "torch":  # compiled inference: faster than eager TF / JAX here
                return np.asarray(self.model.predict_on_batch(self._x(x)), np.float64)
            return self.to_numpy(self.model(self._x(x), training=training))

    def sgd_step(self, x, target, lr):
        with self._scope():
            if self.recipe is not None and self.recipe.direct:
                return self._custom_step(x, target, lr, self.recipe.training)
            if self._compiled_lr != lr:
                self.model.compile(optimizer=self.K.optimizers.SGD(learning_rate=lr), loss="mse")
                self._compiled_lr = lr
            if self.recipe is not None and self.recipe.module_eval:
                self.model.eval()  # the torch idiom; Keras resolves `training` from its own call context
            out = self.model.train_on_batch(self._x(x), self._x(target))
            return float(np.asarray(out, np.float64).ravel()[0])

    def _custom_step(self, x, target, lr, training):
        K, model = self.K, self.model
        xt, tt = self._x(x), self._x(target)
        call = (lambda *a: model(*a)) if training == "omit" else (lambda *a: model(*a, training=training))
        opt = K.optimizers.SGD(learning_rate=lr)
        variables = model.trainable_variables
        if self.backend in ("tensorflow", "tf_keras"):
            import tensorflow as tf

            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(call(xt) - tt))
            grads = tape.gradient(loss, variables)
            opt.apply_gradients(zip(grads, variables))
            return float(loss.numpy())
        if self.backend == "torch":
            for v in variables:
                v.value.grad = None
            loss = K.ops.mean(K.ops.square(call(xt) - tt))
            loss.backward()
            opt.apply([v.value.grad for v in variables], variables)
            return float(loss.detach().cpu().double())
        # jax: differentiate a stateless call, then write the new non-trainable state (BN statistics) back
        import jax
        import jax.numpy as jnp

        tv = [v.value for v in variables]
        ntv = [v.value for v in model.non_trainable_variables]

        def f(tv_):
            kw = {} if training == "omit" else {"training": training}
            y, ntv2 = model.stateless_call(tv_, ntv, xt, **kw)
            return jnp.mean(jnp.square(y - tt)), ntv2

        (loss, ntv2), grads = jax.value_and_grad(f, has_aux=True)(tv)
        opt.apply(grads, variables)
        for v, val in zip(model.non_trainable_variables, ntv2):
            v.assign(val)
        return float(loss)

    def get_weights(self):
        out = {}
        for name, (kind, lay) in self.layers.items():
            w = [np.asarray(a, np.float64) for a in lay.get_weights()]
            if kind == "conv":
                out[f"{name}.kernel"], out[f"{name}.bias"] = w[0].transpose(3, 2, 0, 1).copy(), w[1]
            elif kind == "dense":
                out[f"{name}.kernel"], out[f"{name}.bias"] = w[0].T.copy(), w[1]
            else:
                for s, a in zip(("scale", "offset", "mean", "var"), w):
                    out[f"{name}.{s}"] = a
        return out

    def native_kernel_shapes(self):
        return {f"{name}.kernel": tuple(lay.kernel.shape) for name, (kind, lay) in self.layers.items() if kind != "bn"}


def build(adapter_cls, arch, weights, **kw) -> KerasNet:
    return KerasNet(adapter_cls, arch, weights, **kw)
