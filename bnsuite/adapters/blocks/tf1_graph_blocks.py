"""TF1 graph blocks: tf.compat.v1.layers.dense / batch_normalization / dropout and tf.nn activations in one graph
and session (TF_USE_LEGACY_KERAS=1), trained with GradientDescentOptimizer on tf.compat.v1.losses.

Layouts: a dense kernel is (in, units), the transpose of the canonical one; batch_normalization's momentum weights
the OLD value (it receives 1 - canonical). A training-mode forward runs the UPDATE_OPS with it. Dropout's mask comes
from the graph's seeded random op (graph seed 0, op seed 1), a new mask per run; the forward's `seed` is unused."""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, Unsupported
from bnsuite.adapters.blocks import BlockDeclaration, Blocks

_LOSS = "tf.compat.v1.losses.sigmoid_cross_entropy"

DECLARATION = BlockDeclaration(
    dropout_scaling=Cited("inverted", "tf_keras/src/legacy_tf_layers/core.py: dropout -> Dropout layer, identity "
                                      "unless training; tensorflow/python/ops/nn_ops.py: dropout_v2 'The outputs are "
                                      "scaled up by 1 / (1 - rate)'"),
    bce_losses=Cited({_LOSS: "logits"}, "tensorflow/python/ops/losses/losses_impl.py: sigmoid_cross_entropy("
                                        "multi_class_labels, logits, ...) applies sigmoid_cross_entropy_with_logits"),
    one_unit_softmax_bce=Cited("zero", "tensorflow/python/ops/losses/losses_impl.py: sigmoid_cross_entropy uses its "
                                       "logits argument as given (tf.nn.softmax caches nothing on its output)"),
)


class Tf1GraphBlocks(Blocks):
    declaration = DECLARATION

    def __init__(self, spec, weights):
        super().__init__(spec, weights)
        import tensorflow as tf

        v1 = tf.compat.v1
        self.tf = tf
        self.graph = tf.Graph()
        with self.graph.as_default():
            v1.set_random_seed(0)
            self.x = v1.placeholder(spec.dtype, (None, spec.in_features), name="x")
            self.training = v1.placeholder_with_default(False, (), name="training")
            self.lr = v1.placeholder(spec.dtype, (), name="lr")
            h, self.outs = self.x, []
            for op in spec.ops:
                if op[0] == "dense":
                    h = v1.layers.dense(h, op[1], name="dense")
                elif op[0] == "bn":
                    h = v1.layers.batch_normalization(h, axis=-1, momentum=1.0 - spec.momentum, epsilon=spec.eps,
                                                      training=self.training, name="bn")
                elif op[0] == "relu":
                    h = tf.nn.relu(h)
                elif op[0] == "sigmoid":
                    h = tf.sigmoid(h)
                elif op[0] == "softmax":
                    h = tf.nn.softmax(h, axis=op[1])
                elif op[0] == "dropout":
                    h = v1.layers.dropout(h, spec.rate, training=self.training, seed=1)
                self.outs.append(h)
            self.update_ops = list(v1.get_collection(v1.GraphKeys.UPDATE_OPS))
            self.loss = self.step = None  # built by the first sgd_step (most blocks never train)
            self.vars = {v.name.split(":")[0]: v for v in v1.global_variables()}
            self._ph = {n: v1.placeholder(v.dtype.base_dtype, v.shape) for n, v in self.vars.items()}
            self._assign = {n: v.assign(self._ph[n]) for n, v in self.vars.items()}
            self.sess = v1.Session(graph=self.graph)
            self.sess.run(v1.global_variables_initializer())
        self._set(weights)

    _NAMES = {"dense.kernel": "dense/kernel", "dense.bias": "dense/bias", "bn.scale": "bn/gamma",
              "bn.offset": "bn/beta", "bn.mean": "bn/moving_mean", "bn.var": "bn/moving_variance"}

    def _set(self, w):
        for k, name in self._NAMES.items():
            if name in self.vars and k in w:
                value = w[k].T if k == "dense.kernel" else w[k]
                self.sess.run(self._assign[name], {self._ph[name]: np.asarray(value, self.spec.dtype)})

    def forward(self, x, training, seed=0):
        fetches = [self.outs] + ([self.update_ops] if training else [])
        res = self.sess.run(fetches, {self.x: np.asarray(x, self.spec.dtype), self.training: training})
        return [np.asarray(o, np.float64) for o in res[0]]

    def weights(self):
        out = {}
        for k, name in self._NAMES.items():
            if name in self.vars:
                v = np.asarray(self.sess.run(self.vars[name]), np.float64)
                out[k] = v.T.copy() if k == "dense.kernel" else v
        return out

    def sgd_step(self, x, target, loss, lr):
        if loss != _LOSS:
            raise Unsupported(f"tf1-graph: no loss {loss!r}")
        if self.step is None:
            v1 = self.tf.compat.v1
            with self.graph.as_default():
                self.t = v1.placeholder(self.spec.dtype, (None, self.spec.features), name="t")
                self.loss = v1.losses.sigmoid_cross_entropy(self.t, self.outs[-1])
                self.step = v1.train.GradientDescentOptimizer(self.lr).minimize(self.loss)
        value, _ = self.sess.run([self.loss, self.step], {self.x: np.asarray(x, self.spec.dtype),
                                                          self.t: np.asarray(target, self.spec.dtype),
                                                          self.lr: lr})
        return float(value)
