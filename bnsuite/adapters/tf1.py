"""TF1-compat adapters.

* ``tf1-keras``: the V1 Keras layer, ``tf.compat.v1.keras.layers.BatchNormalization``, run eagerly.
* ``tf1-graph``: ``tf.compat.v1.layers.batch_normalization`` in a TF1 graph and session; the moving-statistic updates
  live in the UPDATE_OPS collection and run only when a fetched op depends on them.

Both need TF_USE_LEGACY_KERAS=1 before TensorFlow is imported: without it TF 2.21 routes ``tf.compat.v1.keras`` to
Keras 3 and ``tf.compat.v1.layers.batch_normalization`` raises AttributeError (tensorflow/python/util/lazy_loader.py,
``if os.environ.get("TF_USE_LEGACY_KERAS", None) in ("true", "True", "1")``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import NamedTuple

import numpy as np

from bnsuite.adapters.base import BatchNormAdapter, Cited, FreezeFacts, FreezeIdiom, Grads, Probe
from bnsuite.adapters.conventions import SlotState, build_shape, is_channels_last, old_weight_kwargs, refuse_untracked
from bnsuite.adapters.frameworks import OnFramework
from bnsuite.adapters.keras_family import KERAS_SLOTS, tf_dtype_name
from bnsuite.adapters.mixed_precision import tf1_mixed
from bnsuite.adapters.tf_keras_v2 import TF_KERAS, TfKerasLayerBase, tf_keras_declaration

V1_SRC = "tf_keras/layers/normalization/batch_normalization_v1.py"
LEGACY_SRC = "tf_keras/legacy_tf_layers/normalization.py"
LEGACY_ENV = {"TF_USE_LEGACY_KERAS": "1"}


_PROBE_CODE = """
import tensorflow as tf
cls = tf.compat.v1.keras.layers.BatchNormalization
print(cls.__module__.split(".")[0])
try:
    tf.compat.v1.layers.batch_normalization
    print("available")
except AttributeError as e:
    print("error:AttributeError")
"""


def _without_legacy_flag() -> list[str]:
    """What TensorFlow gives for the TF1 APIs in a fresh process WITHOUT TF_USE_LEGACY_KERAS."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    out = subprocess.run([sys.executable, "-c", _PROBE_CODE], env=env, capture_output=True, text=True, timeout=300)
    lines = out.stdout.split()
    return lines if len(lines) == 2 else [f"probe failed: {out.stderr.strip().splitlines()[-1:]}", ""]


_LAZY = "tensorflow/python/util/lazy_loader.py (TF 2.21)"


def legacy_switch_probes() -> list[Probe]:
    cache: dict = {}

    def get(i):
        def run():
            if "v" not in cache:
                cache["v"] = _without_legacy_flag()
            return cache["v"][i]
        return run

    return [
        Probe("tf_compat_v1_keras_without_legacy_flag", Cited(
            "keras", f"{_LAZY}: without TF_USE_LEGACY_KERAS, tf.compat.v1.keras resolves to keras._tf_keras.keras, "
                     "so tf.compat.v1.keras.layers.BatchNormalization is the Keras 3 layer, not the TF1 one"), get(0)),
        Probe("tf_compat_v1_layers_without_legacy_flag", Cited(
            "error:AttributeError", f"{_LAZY}: raises AttributeError('`batch_normalization` is not available with "
                                    "Keras 3.')"), get(1)),
    ]


class Tf1Keras(TfKerasLayerBase):
    id = "tf1-keras"
    capabilities = {**TfKerasLayerBase.capabilities, "blocks": "bnsuite.adapters.blocks.keras_blocks:Tf1KerasBlocks",
                    "replicas": "bnsuite.adapters.replicas.tf_mirrored:Tf1KerasReplicas",
                    "edge_facts": "bnsuite.adapters.edge_facts:TF1_KERAS"}
    process_env = LEGACY_ENV
    snippet_head = "import os; os.environ['TF_USE_LEGACY_KERAS'] = '1'\nimport tensorflow as tf\n"
    snippet_class = "tf.compat.v1.keras.layers.BatchNormalization"

    @classmethod
    def declare(cls):
        return tf_keras_declaration(False, "tf.compat.v1.keras (TF1 layer)", V1_SRC)

    @classmethod
    def probes(cls):
        return legacy_switch_probes()

    def _layer_class(self):
        import tensorflow as tf

        return tf.compat.v1.keras.layers.BatchNormalization


class Tf1GraphRecipe(NamedTuple):
    """How a TF1-graph freeze idiom builds the graph, read alike by the lone layer and the networks."""

    trainable: bool  # the layer's trainable argument when the graph is built
    update_ops: bool  # the train op depends on the UPDATE_OPS collection


TF1_GRAPH_IDIOMS = {
    "train_op_with_update_ops": FreezeIdiom(Tf1GraphRecipe(True, True)),
    "train_op_without_update_ops": FreezeIdiom(Tf1GraphRecipe(True, False)),
    "trainable_false_with_update_ops": FreezeIdiom(Tf1GraphRecipe(False, True)),
}


class Tf1Graph(OnFramework, SlotState, BatchNormAdapter):
    """One tf.compat.v1.layers.batch_normalization in its own graph and session."""

    id = "tf1-graph"
    runs_on = TF_KERAS
    process_env = LEGACY_ENV
    capabilities = {
        "network": "bnsuite.adapters.nets.tf1_graph_net:build",
        "blocks": "bnsuite.adapters.blocks.tf1_graph_blocks:Tf1GraphBlocks",
        "mixed_precision": "bnsuite.adapters.mixed_precision.tf1_mixed:step",
        "edge_facts": "bnsuite.adapters.edge_facts:TF1_GRAPH",
        "training_loops": "bnsuite.lanes.loops.tf1_loops:Tf1GraphLoops",
    }
    freeze_idioms = TF1_GRAPH_IDIOMS

    @classmethod
    def declare(cls):
        d = tf_keras_declaration(False, "tf.compat.v1.layers (TF1 graph)", LEGACY_SRC)
        return dataclasses.replace(
            d,
            training_default=Cited("inference", f"{LEGACY_SRC}: batch_normalization(..., training=False)"),
            mixed_precision=tf1_mixed.declared(),
            freeze={
                "train_op_with_update_ops": Cited(
                    FreezeFacts("batch", True, True),
                    f"{LEGACY_SRC}: docstring 'the update ops are placed in tf.GraphKeys.UPDATE_OPS, so they need to "
                    "be executed alongside the train_op'"),
                "train_op_without_update_ops": Cited(
                    FreezeFacts("batch", False, True),
                    "tf_keras/legacy_tf_layers/base.py: updates are only added to UPDATE_OPS; nothing runs them "
                    "unless the train op depends on them"),
                "trainable_false_with_update_ops": Cited(
                    FreezeFacts("batch", False, False),
                    "tf_keras/src/engine/base_layer_v1.py: Layer.updates skips layers with `not layer.trainable and "
                    "not layer.stateful`, and tf_keras/src/legacy_tf_layers/base.py adds only self.updates to "
                    "UPDATE_OPS: a frozen layer contributes no update ops, so it normalizes with batch statistics "
                    "(V1: trainable does not force inference) and never moves them"),
            },
        )

    def __init__(self, spec):
        super().__init__(spec)
        self._kwargs = old_weight_kwargs(spec, "tf.compat.v1.layers")
        refuse_untracked(spec, "tf.compat.v1.layers")
        self._build(trainable=True)

    def _build(self, trainable: bool) -> None:
        """A fresh graph and session holding the layer; `trainable` is fixed when the graph is built. The ops that
        only some cases fetch (the default-mode output, the gradients, the train ops) are added to the same graph on
        first use: they create no variables, and a TF1 session runs ops added after it was created."""
        import tensorflow as tf

        spec, kwargs = self.spec, self._kwargs
        v1 = tf.compat.v1
        self.tf = tf
        self.graph = tf.Graph()
        self._trainable = trainable
        self._lazy = {}
        with self._in_graph():
            shape = list(getattr(self, "_x_shape", None) or build_shape(spec))  # rebuild_with_axes: feature dims
            self.x = v1.placeholder(spec.dtype, shape, name="x")
            self.dy = v1.placeholder(spec.dtype, shape, name="dy")
            self.lr = v1.placeholder(spec.dtype, (), name="lr")
            bn = v1.layers.batch_normalization
            self.y_train = bn(self.x, training=True, trainable=trainable, name="bn", **kwargs)
            self.update_ops = list(v1.get_collection(v1.GraphKeys.UPDATE_OPS))
            self.y_infer = bn(self.x, training=False, trainable=trainable, name="bn", reuse=True, **kwargs)
            with tf.control_dependencies(self.update_ops):
                self.y_train_with_updates = tf.identity(self.y_train)
            variables = {v.name.split("/")[-1].split(":")[0]: v for v in v1.global_variables()
                         if v.name.startswith("bn/")}
            self.vars = {k: variables.get(k) for k in ("gamma", "beta", "moving_mean", "moving_variance")}
            self._ph = {k: v1.placeholder(v.dtype.base_dtype, v.shape) for k, v in self.vars.items() if v is not None}
            self._assign = {k: v.assign(self._ph[k]) for k, v in self.vars.items() if v is not None}
            self.layer_fused = self._fused_flag()
            init = v1.global_variables_initializer()
        self.sess = v1.Session(graph=self.graph)
        self.sess.run(init)

    def _in_graph(self):
        """The layer's graph and device, for building ops in it."""
        stack = contextlib.ExitStack()
        stack.enter_context(self.graph.as_default())
        stack.enter_context(self.tf.device("/GPU:0" if self.spec.device == "gpu" else "/CPU:0"))
        return stack

    def _once(self, name, make):
        if name not in self._lazy:
            with self._in_graph():
                self._lazy[name] = make(self.tf, self.tf.compat.v1)
        return self._lazy[name]

    @property
    def y_default(self):
        """The layer called with `training` left out."""
        return self._once("y_default", lambda tf, v1: v1.layers.batch_normalization(
            self.x, trainable=self._trainable, name="bn", reuse=True, **self._kwargs))

    def _step(self, with_updates: bool):
        def make(tf, v1):
            loss = tf.reduce_sum(self.y_train * self.dy)
            trainables = v1.trainable_variables()
            opt = v1.train.GradientDescentOptimizer(self.lr)
            if not with_updates:
                return opt.minimize(loss, var_list=trainables) if trainables else tf.no_op()
            with tf.control_dependencies(self.update_ops):
                return opt.minimize(loss, var_list=trainables) if trainables else tf.group(*self.update_ops)
        return self._once(f"step_{with_updates}", make)

    @property
    def step_with_updates(self):
        return self._step(True)

    @property
    def step_without_updates(self):
        return self._step(False)

    def _grads(self, training: bool):
        """Gradients of sum(y * dy) in the graph; in training through the batch statistics (no update ops run)."""
        def make(tf, v1):
            wrt = [self.x] + [v for v in (self.vars["gamma"], self.vars["beta"]) if v is not None]
            return tf.gradients(tf.reduce_sum((self.y_train if training else self.y_infer) * self.dy), wrt)
        return self._once(f"grads_{training}", make)

    # -- edge inputs: a fresh graph with the option over the spec's arguments ----------------------------------------
    def rebuild_with_virtual_batch_size(self, virtual_batch_size):
        self.sess.close()
        self._kwargs = {**self._kwargs, "virtual_batch_size": virtual_batch_size}
        self._build(trainable=True)

    def rebuild_with_axes(self, axes, x_shape):
        self.sess.close()
        self._kwargs = {**self._kwargs, "axis": list(axes)}
        self._x_shape = [None, *x_shape[1:]]
        self._build(trainable=True)

    def _fused_flag(self) -> bool:
        # The fused kernel shows up as a FusedBatchNormV3 op in the graph.
        return any(op.type.startswith("FusedBatchNorm") for op in self.graph.get_operations())

    def code_path(self, x_shape) -> str:
        return "fused" if self.layer_fused else "non-fused"

    def forward(self, x, training):
        fetch = self.y_default if training is None else self.y_train_with_updates if training else self.y_infer
        y = self.sess.run(fetch, {self.x: np.asarray(x)})
        self.last_output_dtype = tf_dtype_name(fetch)
        return np.asarray(y, np.float64)

    def backward(self, x, dy, training):
        """tf.gradients (built on first use); fetching them runs no update op, so the state is untouched."""
        out = self.sess.run(self._grads(bool(training)), {self.x: np.asarray(x), self.dy: np.asarray(dy)})
        out = [np.asarray(g, np.float64) for g in out]
        dx, rest = out[0], out[1:]
        scale = rest.pop(0) if self.vars["gamma"] is not None else None
        offset = rest.pop(0) if self.vars["beta"] is not None else None
        return Grads(dx, scale, offset)

    def run_train_op(self, x, dy, lr: float, with_update_ops: bool) -> np.ndarray:
        step = self.step_with_updates if with_update_ops else self.step_without_updates
        y, _ = self.sess.run([self.y_train, step], {self.x: np.asarray(x), self.dy: np.asarray(dy), self.lr: lr})
        return np.asarray(y, np.float64)

    # -- state: the SlotState loop over the graph's variables, named as the Keras layer names its weights -----------
    def _slot(self, name):
        key = KERAS_SLOTS[name]
        return key if self.vars[key] is not None else None

    def _read(self, key):
        return self.sess.run(self.vars[key])

    def _write(self, key, value):
        self.sess.run(self._assign[key], {self._ph[key]: value})

    def _dtype(self, key):
        return tf_dtype_name(self.vars[key])

    def hyperparameters(self):
        import inspect

        # The function builds a layer per call and returns only the tensor; its signature holds the defaults.
        params = inspect.signature(self.tf.compat.v1.layers.batch_normalization).parameters
        value = lambda name: self._kwargs.get(name, params[name].default)
        return {"eps": value("epsilon"), "momentum": value("momentum"),
                "channels_last": is_channels_last(value("axis"), self.spec.rank)}

    def frozen_step(self, idiom, x, dy, lr):
        recipe = self.freeze_recipe(idiom)
        if not recipe.trainable:
            # trainable is fixed when the graph is built: rebuild the same layer frozen, with the same state.
            state = self.get_state()
            self._build(trainable=False)
            self.set_state(state)
        return self.run_train_op(x, dy, lr, recipe.update_ops)

    def snippet(self):
        s = self.spec
        return ("import os; os.environ['TF_USE_LEGACY_KERAS'] = '1'\nimport tensorflow as tf\n"
                "tf.compat.v1.disable_eager_execution()\n"
                f"x = tf.compat.v1.placeholder({s.dtype!r}, [None] * {s.rank})\n"
                f"y = tf.compat.v1.layers.batch_normalization(x, training=True, **{self._kwargs!r})\n"
                "update_ops = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)")
