"""The TF1 graph layer's training loops (tf.compat.v1.layers.batch_normalization in a graph and session), as TF1
code wrote them: gradient accumulation with accumulator variables (each micro-batch's gradients added with the
UPDATE_OPS run alongside, as the layer's docstring asks, then one apply_gradients) and weight averaging with
tf.compat.v1.train.ExponentialMovingAverage over the trainable variables.

Sources are the installed tensorflow / tf_keras (tf_keras/src/legacy_tf_layers/normalization.py,
tensorflow/python/training/moving_averages.py).
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.lanes.loops import AccumulationRule, AccumulationRun, AveragingRule, AveragingRun, TrainingLoops

_LAYER = "tf_keras/src/legacy_tf_layers/normalization.py"
_EMA = "tensorflow/python/training/moving_averages.py"
EMA_DECAY = 0.5  # far from the usual 0.999 so that T = 3 steps give an average distinct from every snapshot

_ACCUMULATE = (f"{_LAYER}: batch_normalization docstring 'the update ops are placed in tf.GraphKeys.UPDATE_OPS, so "
               "they need to be executed alongside the train_op'; the accumulation loop runs them with every "
               "micro-batch's gradient (assign_add of grad / k into accumulator variables) and applies the "
               "accumulated gradient once (GradientDescentOptimizer.apply_gradients)")
_AVERAGE = (f"{_EMA}: ExponentialMovingAverage.apply(var_list) creates each shadow variable initialized with the "
            "variable's initial value (the weights before the first step) and assigns shadow -= (1 - decay) * "
            "(shadow - var) (no zero_debias for variables); applied to tf.trainable_variables(), which hold gamma "
            "and beta only (moving_mean/moving_variance are not trainable), so evaluating with "
            "variables_to_restore() averages the parameters and keeps the live moving statistics")


class Tf1GraphLoops(TrainingLoops):
    accumulation = {"accumulator_variables_with_update_ops": Cited(AccumulationRule("every-micro-batch"), _ACCUMULATE)}
    averaging = {"exponential_moving_average_trainables": Cited(
        AveragingRule("ema-from-initial", "live", decay=EMA_DECAY), _AVERAGE)}

    @staticmethod
    def _graph_loop(adapter_cls, spec, state):
        """The adapter's graph and session loaded with `state`, with the loop's ops added to its graph: (bn, run),
        run(x, dy, scale) adding scale * grad(sum(y * dy) / m) into the accumulators with the update ops, and
        bn.apply_op applying the accumulated gradient (then clearing the accumulators)."""
        import tensorflow as tf

        v1 = tf.compat.v1
        bn = adapter_cls(spec)
        with bn.graph.as_default():
            params = [v for v in (bn.vars["gamma"], bn.vars["beta"]) if v is not None]
            scale = v1.placeholder(spec.dtype, ())
            loss = tf.reduce_sum(bn.y_train * bn.dy) / tf.cast(tf.shape(bn.x)[0], spec.dtype)
            grads = tf.gradients(loss, params)
            accs = [v1.Variable(tf.zeros_like(p), trainable=False) for p in params]
            with tf.control_dependencies(bn.update_ops):
                add = tf.group(*[a.assign_add(scale * g) for a, g in zip(accs, grads)])
            opt = v1.train.GradientDescentOptimizer(bn.lr)
            apply = opt.apply_gradients(list(zip([a.read_value() for a in accs], params)))
            with tf.control_dependencies([apply]):
                bn.apply_op = tf.group(*[a.assign(tf.zeros_like(a)) for a in accs])
            bn.sess.run(v1.variables_initializer(accs))
        bn.set_state(state)

        def run(x, dy, k):
            bn.sess.run(add, {bn.x: np.asarray(x, spec.dtype), bn.dy: np.asarray(dy, spec.dtype), scale: 1.0 / k})
        return bn, run

    @classmethod
    def accumulate(cls, adapter_cls, idiom, spec, state, micro_batches, cotangents, lr):
        if idiom not in cls.accumulation:
            raise KeyError(idiom)

        def step(pairs):
            bn, run = cls._graph_loop(adapter_cls, spec, state)
            for x, dy in pairs:
                run(x, dy, len(pairs))
            bn.sess.run(bn.apply_op, {bn.lr: lr})
            return bn.get_state()

        k = len(micro_batches)
        snippet = ("with tf.control_dependencies(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)):\n"
                   "    add = [acc.assign_add(g / k) for acc, g in zip(accs, tf.gradients(loss, params))]\n"
                   f"for x, dy in micro_batches:  # k = {k}\n    sess.run(add, {{x_ph: x, dy_ph: dy}})\n"
                   f"sess.run(opt.apply_gradients(zip(accs, params)))  # GradientDescentOptimizer({lr})")
        return AccumulationRun(step(list(zip(micro_batches, cotangents))),
                               step([(np.concatenate(micro_batches), np.concatenate(cotangents))]), snippet)

    @classmethod
    def average(cls, adapter_cls, idiom, spec, state, batches, cotangents, lr):
        import tensorflow as tf

        if idiom not in cls.averaging:
            raise KeyError(idiom)
        v1 = tf.compat.v1
        bn = adapter_cls(spec)
        bn.set_state(state)  # before the shadow variables are created: they start from these weights
        with bn.graph.as_default():
            params = [v for v in (bn.vars["gamma"], bn.vars["beta"]) if v is not None]
            ema = v1.train.ExponentialMovingAverage(EMA_DECAY)
            with tf.control_dependencies([bn.step_with_updates]):
                train = ema.apply(v1.trainable_variables())
            # evaluation with the averages, as variables_to_restore() would load them
            load_averages = tf.group(*[p.assign(ema.average(p)) for p in params])
            bn.sess.run(v1.variables_initializer([ema.average(p) for p in params]))
        for x, dy in zip(batches, cotangents):
            # the adapter's train op minimizes sum(y * dy); the loops' loss is its mean over the batch's samples
            bn.sess.run(train, {bn.x: np.asarray(x, spec.dtype), bn.dy: np.asarray(dy, spec.dtype) / len(x),
                                bn.lr: lr})
        live = bn.get_state()
        bn.sess.run(load_averages)
        snippet = (f"ema = tf.compat.v1.train.ExponentialMovingAverage({EMA_DECAY})\n"
                   "with tf.control_dependencies([train_op]):  # train_op depends on UPDATE_OPS\n"
                   "    train = ema.apply(tf.compat.v1.trainable_variables())\n"
                   "# evaluation: saver = tf.compat.v1.train.Saver(ema.variables_to_restore())")
        return AveragingRun(bn.get_state(), live, snippet)
