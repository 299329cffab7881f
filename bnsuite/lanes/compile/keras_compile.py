"""Keras' compiled and stateless paths: tf.function(jit_compile=True) around the layer (XLA; Keras 3 on TensorFlow
and tf_keras), Keras 3's stateless_call(training=True) (are the returned non-trainable variables the updated moving
statistics) and model.compile(jit_compile=True) + fit (XLA on TensorFlow and JAX, dynamo on torch). Each path runs
over the Keras adapter's layer (its built layer and its loaded state).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from bnsuite.adapters.base import Cited, Grads, State
from bnsuite.lanes.compile import CompileLane, PathFacts
from bnsuite.lanes.compile.torch_compile import use_checkout_cache

_BN3 = "keras/src/layers/normalization/batch_normalization.py: call(training=True) assigns moving_mean/moving_variance"
_XLA = ("tensorflow/python/eager/polymorphic_function/polymorphic_function.py: tf.function(jit_compile=True) "
        "compiles the traced graph with XLA, whose fused reductions differ from the eager kernels in the last bits; "
        "variable assignments inside are kept (resource variables)")
_STATELESS = ("keras/src/layers/layer.py: Layer.stateless_call returns (outputs, non_trainable_variables) with the "
              "values the call assigned inside a StatelessScope, and never writes the layer's own variables "
              "(keras-team/keras#20378)")
_FIT = ("keras/src/trainers/trainer.py: compile(jit_compile=True); each backend's train_step runs the model with "
        "training=True and the moving statistics are written back after the step (keras/src/backend/jax/trainer.py: "
        "_update_non_trainable_variables; tensorflow: tf.function(jit_compile=True); torch: torch.compile)")
_TFK_BN = "tf_keras/src/layers/normalization/batch_normalization.py: call(training=True) assign_moving_average"
_TFK_FIT = "tf_keras/src/engine/training.py: Model.compile(jit_compile=True) makes train_function an XLA tf.function"

# The freeze idioms run through a fit step compiled with XLA: the two that train through fit's own forward pass.
FIT_FREEZE = ("trainable_false_fit", "functional_training_false_fit")
# A fit step cannot show the layer's output or its gradients, only what it leaves in the variables.
_FIT_FACTS = dict(train_normalizes="not observable", grads="not observable", eval_switch="running",
                  cumulative="n/a")


def _keras3(backend: str) -> dict:
    paths = {
        "keras-stateless_call": Cited(PathFacts(
            "y, ntv = bn.stateless_call(bn.trainable_variables, ntv, x, training=True), ntv carried to the next call",
            running_stats="passed", cumulative="n/a"),
            f"{_STATELESS}; {_BN3}"),
        "keras-fit-jit_compile": Cited(PathFacts(
            "model.compile(SGD(0), 'mse', jit_compile=True); model.train_on_batch(x, y) per batch (fit's train step)",
            **_FIT_FACTS), f"{_FIT}; {_BN3}"),
    }
    if backend in ("tensorflow", "torch"):
        # fit compiles (XLA on TensorFlow, torch.compile on torch) only when asked on a CPU (trainer.py
        # _resolve_auto_jit_compile: False without accelerators); on JAX every fit step is jitted already, so the
        # eager freeze checks cover it
        paths["keras-fit-jit_compile"] = Cited(dataclasses.replace(paths["keras-fit-jit_compile"].value,
                                                                   freeze=FIT_FREEZE), paths["keras-fit-jit_compile"].source)
    if backend == "tensorflow":
        paths["keras-tf.function-jit_compile"] = Cited(PathFacts(
            "tf.function(lambda x: bn(x, training=True), jit_compile=True)", cumulative="n/a"), f"{_XLA}; {_BN3}")
    return paths


def _one_layer_model(K, layer):
    """A subclassed model around the one layer (its call passes fit's training flag on): the smallest model fit can
    train, with fewer frames for dynamo to trace on torch than a functional one."""

    class OneLayer(K.Model):
        def __init__(self):
            super().__init__()
            self.bn = layer

        def call(self, x, training=None):
            return self.bn(x, training=training)

    return OneLayer()


class KerasCompile(CompileLane):
    framework = "keras"
    backend = "tensorflow"

    @classmethod
    def declare(cls):
        return _keras3(cls.backend)

    def _layer(self, spec, state):
        if self.backend == "torch":  # fit's torch.compile: Inductor's kernels in the checkout's cache, as torch's lane
            use_checkout_cache()
        return super()._layer(spec, state)

    def run(self, path, spec, state, batches, dy, grads=True):
        start = time.perf_counter()
        bn = self._layer(spec, state)
        step, infer, carried = self._path(path, bn, batches, dy)
        return self._run_steps(bn, step, infer, carried or bn.get_state, batches, grads, start)

    def _path(self, path, bn, batches, dy):
        """(step(x, want_grads) -> (y or None, Grads or None), infer(x) -> y, carried() -> State or None)."""
        lay, f64 = bn.layer, lambda t: np.asarray(bn._to_numpy(t), np.float64)
        if path == "keras-tf.function-jit_compile":
            import tensorflow as tf

            train = tf.function(lambda x: lay(x, training=True), jit_compile=True)
            infer = tf.function(lambda x: lay(x, training=False), jit_compile=True)

            def step(x, want):
                xt, dyt = bn._in(x), bn._in(dy)
                with tf.GradientTape() as tape:
                    tape.watch(xt)
                    y = train(xt)
                    loss = tf.reduce_sum(y * dyt)
                g = None
                if want:
                    dx, dg, db = tape.gradient(loss, [xt, lay.gamma, lay.beta])
                    g = Grads(f64(dx), f64(dg), f64(db))
                return f64(y), g
            return step, lambda x: f64(infer(bn._in(x))), None
        if path == "keras-stateless_call":
            return self._stateless(bn, lay, dy, f64)
        if path in ("keras-fit-jit_compile", "tf_keras-fit-jit_compile"):
            model = _one_layer_model(bn._keras(), lay)
            # lr 0: the step moves only the moving statistics; a plain loss keeps the traced train step small
            model.compile(optimizer=bn._keras().optimizers.SGD(learning_rate=0.0),
                          loss=lambda t, p: bn._reduce_sum(t * p), jit_compile=True)

            def step(x, want):
                model.train_on_batch(bn._in(x), bn._in(np.zeros_like(x)))  # fit's train step, compiled once
                return None, None
            return step, lambda x: f64(model(bn._in(x), training=False)), None
        raise KeyError(path)

    def freeze(self, path, idiom, spec, state, x, dy, lr):
        """The adapter's freeze idiom (bnsuite/adapters/keras_fit.py fit_step) with model.compile(jit_compile=True)."""
        from bnsuite.adapters.keras_fit import fit_step

        if not path.endswith("fit-jit_compile"):
            raise NotImplementedError(f"{type(self).__name__}: no freeze idioms under {path}")
        bn = self._layer(spec, state)
        with bn._scope():
            y = fit_step(bn._keras(), bn, idiom, x, dy, lr, bn._in, bn._to_numpy, bn._reduce_sum, jit_compile=True)
        return y, bn.get_state()

    def _stateless(self, bn, lay, dy, f64):
        import keras

        backend = keras.backend.backend()
        tv = [v.value for v in lay.trainable_variables]
        carried = {"ntv": [v.value for v in lay.non_trainable_variables]}
        names = [v.path.rsplit("/", 1)[-1] for v in lay.non_trainable_variables]

        def state():
            vals = dict(zip(names, carried["ntv"]))
            return State(f64(lay.gamma), f64(lay.beta), f64(vals["moving_mean"]), f64(vals["moving_variance"]))

        def call(t, n, x, training):
            return lay.stateless_call(t, n, x, training=training)

        def step(x, want):
            xt, dyt = bn._in(x), bn._in(dy)
            y, carried["ntv"] = call(tv, carried["ntv"], xt, True)
            g = self._stateless_grads(backend, call, tv, carried["ntv"], xt, dyt, f64) if want else None
            return f64(y), g
        return step, lambda x: f64(call(tv, carried["ntv"], bn._in(x), False)[0]), state

    @staticmethod
    def _stateless_grads(backend, call, tv, ntv, xt, dyt, f64):
        """Gradients of sum(y * dy) through a stateless training call with the framework's own autodiff (the call's
        statistics update is discarded: the step above already carried it)."""
        if backend == "jax":
            import jax
            import jax.numpy as jnp

            fn = lambda t, x: jnp.sum(call(t, ntv, x, True)[0] * dyt)
            dt, dx = jax.grad(fn, argnums=(0, 1))(tv, xt)
        elif backend == "tensorflow":
            import tensorflow as tf

            with tf.GradientTape() as tape:
                tape.watch(xt)
                tape.watch(tv)
                loss = tf.reduce_sum(call(tv, ntv, xt, True)[0] * dyt)
            dx, dt = tape.gradient(loss, [xt, tv])
        else:
            import torch

            t = [v.detach().clone().requires_grad_(True) for v in tv]
            x = xt.detach().clone().requires_grad_(True)
            torch.sum(call(t, ntv, x, True)[0] * dyt).backward()
            dx, dt = x.grad, [v.grad for v in t]
        return Grads(f64(dx), f64(dt[0]), f64(dt[1]))


class TfKerasCompile(KerasCompile):
    @classmethod
    def declare(cls):
        return {
            "tf_keras-tf.function-jit_compile": Cited(PathFacts(
                "tf.function(lambda x: bn(x, training=True), jit_compile=True)", cumulative="n/a"),
                f"{_XLA}; {_TFK_BN}"),
            "tf_keras-fit-jit_compile": Cited(PathFacts(
                "model.compile(SGD(0), 'mse', jit_compile=True); model.train_on_batch(x, y) per batch (fit's train step)",
                freeze=FIT_FREEZE, **_FIT_FACTS), f"{_TFK_FIT}; {_TFK_BN}"),
        }

    def _path(self, path, bn, batches, dy):
        return super()._path(path.replace("tf_keras-", "keras-"), bn, batches, dy)


class KerasCompileTensorFlow(KerasCompile):
    backend = "tensorflow"


class KerasCompileJax(KerasCompile):
    backend = "jax"


class KerasCompileTorch(KerasCompile):
    """On torch, compile(jit_compile=True) is torch.compile (inductor) of Keras' whole train step: dynamo traces
    keras/src/backend/torch/trainer.py and the layers' call machinery (about 110 frames for the lane's three fit
    models) into about 10 graphs per model.
    The graphs are small and many: the layer's reduction axes are a Keras TrackedList, which dynamo cannot pass to
    torch.mean, so keras/src/backend/torch/nn.py moments breaks the graph at each op. Cold on 2 cores the fit run
    costs about 25 CPU s (10 C++ kernels and Inductor's one-time ISA probes about 13, dynamo and Inductor's Python
    about 12), the two fit freeze idioms about 6 and 12 (4 and 8 kernels); warm, the kernels come from the cache and
    dynamo's tracing (no disk cache) is most of what is left. Each model compiles once per process: the later steps
    reuse its graphs (the second step recompiles one frame, as gradients are no longer None)."""

    backend = "torch"
