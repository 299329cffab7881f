"""TF1 graph networks: tf.compat.v1.layers (conv2d, batch_normalization, dense) in a tf.Graph and Session, trained
with tf.compat.v1.train.GradientDescentOptimizer; the BN moving-statistic updates live in UPDATE_OPS and run because
the train op depends on them (the documented TF1 pattern).

Layout conversions: conv2d kernel (kh, kw, in, out) = canonical (out, in, kh, kw).transpose(2, 3, 1, 0); dense kernel
(in, out) = canonical.T; BN gamma/beta/moving_mean/moving_variance = scale/offset/mean/var; momentum = 1 - canonical
(the layer weights the OLD value, as adapters/tf1.py converts it).

Freeze idioms (adapters/tf1.py declares them): train_op_with_update_ops (the ordinary step), train_op_without_update_ops
(minimize without the UPDATE_OPS dependency), trainable_false_with_update_ops (BN built with trainable=False, the
train op still depends on UPDATE_OPS).
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, Unsupported
from bnsuite.adapters.nets import HWIO, Network
from bnsuite.adapters.nets.reference_net import IMAGE, IN_CHANNELS, OUT_FEATURES, plan



def _key(name: str) -> str:
    return name.replace(".", "_")


class Tf1GraphNet(Network):
    weight_layout = Cited(HWIO, "tf_keras/src/legacy_tf_layers/convolutional.py Conv2D and core.py Dense subclass the "
                                "tf_keras layers: base_conv.py kernel_shape = kernel_size + (input_channel // groups, "
                                "filters); core/dense.py kernel [last_dim, units]")

    def __init__(self, arch, weights, *, dtype, device, channels_last, eps, momentum, bn_idiom, recipe):
        import tensorflow as tf

        v1 = tf.compat.v1
        self.tf = tf
        self.graph = tf.Graph()
        fmt = "channels_last" if channels_last else "channels_first"
        axis = -1 if channels_last else 1
        spatial = [1, 2] if channels_last else [2, 3]
        # The freeze idiom's recipe (adapters/tf1.py TF1_GRAPH_IDIOMS); none: everything trains, UPDATE_OPS run.
        bn_trainable, update_ops_run = (recipe.trainable, recipe.update_ops) if recipe else (True, True)
        self.kinds = {}
        self._device = "/GPU:0" if device == "gpu" else "/CPU:0"
        with self.graph.as_default(), tf.device(self._device):
            shape = [None, *IMAGE, IN_CHANNELS] if channels_last else [None, IN_CHANNELS, *IMAGE]
            self.x = v1.placeholder(dtype, shape, name="x")
            self.t = v1.placeholder(dtype, [None, OUT_FEATURES], name="t")
            self.lr = v1.placeholder(dtype, (), name="lr")

            def net(training: bool, reuse):
                h = self.x
                L = v1.layers

                def bn(h, name):
                    self.kinds[name] = "bn"
                    return L.batch_normalization(h, axis=axis, momentum=1.0 - momentum, epsilon=eps,
                                                 training=training, trainable=bn_trainable, name=_key(name),
                                                 reuse=reuse)

                def conv(h, name, cout, k):
                    self.kinds[name] = "conv"
                    return L.conv2d(h, cout, k, padding="same", data_format=fmt, name=_key(name), reuse=reuse)

                for op in plan(arch):
                    kind = op[0]
                    if kind == "conv":
                        h = conv(h, op[1], op[3], op[4])
                    elif kind == "bn":
                        h = bn(h, op[1])
                    elif kind == "relu":
                        h = tf.nn.relu(h)
                    elif kind == "gap":
                        h = tf.reduce_mean(h, axis=spatial)
                    elif kind == "dense":
                        self.kinds[op[1]] = "dense"
                        h = L.dense(h, op[3], name=_key(op[1]), reuse=reuse)
                    elif kind == "block":
                        c = conv(tf.nn.relu(bn(h, f"{op[1]}.bn")), f"{op[1]}.conv", op[3], 1)
                        h = tf.concat([h, c], axis=axis)
                return h

            # The inference branch creates the variables; the training branch (reusing them, its moving-statistic
            # updates in UPDATE_OPS), the loss and the train op are built by the first sgd_step: the forward-only
            # cases never train.
            self.y_infer = net(False, None)
            self._train_branch = lambda: net(True, True)
            self._update_ops_run = update_ops_run
            self.loss = self.train_op = None
            gv = {v.name.split(":")[0]: v for v in v1.global_variables()}
            self.vars = {}
            for name, kind in self.kinds.items():
                k = _key(name)
                pairs = {"conv": (("kernel", "kernel"), ("bias", "bias")),
                         "dense": (("kernel", "kernel"), ("bias", "bias")),
                         "bn": (("scale", "gamma"), ("offset", "beta"), ("mean", "moving_mean"),
                                ("var", "moving_variance"))}[kind]
                for canon, tfname in pairs:
                    self.vars[f"{name}.{canon}"] = gv[f"{k}/{tfname}"]
            self._fused = any(op.type.startswith("FusedBatchNorm") for op in self.graph.get_operations())
            init = v1.global_variables_initializer()
            phs = {n: v1.placeholder(v.dtype.base_dtype, v.shape) for n, v in self.vars.items()}
            assign = [v.assign(phs[n]) for n, v in self.vars.items()]
        self.sess = v1.Session(graph=self.graph)
        self.sess.run(init)
        feed = {}
        for n, ph in phs.items():
            a = weights[n]
            if n.endswith(".kernel"):
                a = a.transpose(2, 3, 1, 0) if a.ndim == 4 else a.T
            feed[ph] = a.astype(dtype)
        self.sess.run(assign, feed)

    def code_path(self) -> str:
        return "fused" if self._fused else "non-fused"

    def forward(self, x, training):
        if training:  # a training-mode forward in TF1 runs the updates only when asked; ask, like a train step would
            raise Unsupported("tf1-graph network: training-mode forward outside a train op is not provided")
        return np.asarray(self.sess.run(self.y_infer, {self.x: np.asarray(x)}), np.float64)

    def sgd_step(self, x, target, lr):
        if self.train_op is None:
            tf = self.tf
            v1 = tf.compat.v1
            with self.graph.as_default(), tf.device(self._device):
                y_train = self._train_branch()
                update_ops = list(v1.get_collection(v1.GraphKeys.UPDATE_OPS)) if self._update_ops_run else []
                self.loss = tf.reduce_mean(tf.square(y_train - self.t))
                with tf.control_dependencies(update_ops):
                    self.train_op = tf.compat.v1.train.GradientDescentOptimizer(self.lr).minimize(self.loss)
        loss, _ = self.sess.run([self.loss, self.train_op], {self.x: np.asarray(x), self.t: np.asarray(target),
                                                             self.lr: lr})
        return float(loss)

    def get_weights(self):
        vals = self.sess.run(self.vars)
        out = {}
        for n, a in vals.items():
            a = np.asarray(a, np.float64)
            if n.endswith(".kernel"):
                a = a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.T
            out[n] = a.copy()
        return out

    def native_kernel_shapes(self):
        return {n: tuple(v.shape.as_list()) for n, v in self.vars.items() if n.endswith(".kernel")}


def build(adapter_cls, arch, weights, **kw) -> Tf1GraphNet:
    return Tf1GraphNet(arch, weights, **kw)
