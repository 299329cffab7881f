"""Keras 3's training loops around BatchNormalization, on the process's backend: gradient accumulation by the
optimizer (SGD(gradient_accumulation_steps=k)) and the optimizers' weight EMA (use_ema=True), both through
Model.fit, which calls the optimizer's finalize_variable_values at the end of training.

Sources are the installed keras (keras/src/optimizers/base_optimizer.py, keras/src/backend/*/trainer.py,
keras/src/layers/normalization/batch_normalization.py).
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.lanes.loops import AccumulationRule, AccumulationRun, AveragingRule, AveragingRun, TrainingLoops

_OPT = "keras/src/optimizers/base_optimizer.py"
_BN = "keras/src/layers/normalization/batch_normalization.py"
EMA_MOMENTUM = 0.5  # far from 0.99 so that T = 3 steps give an average distinct from every snapshot


class KerasLoops(TrainingLoops):
    accumulation = {
        "sgd_gradient_accumulation_steps": Cited(
            AccumulationRule("every-micro-batch"),
            f"{_BN}: call assigns moving_mean/moving_variance on every training-mode call (each fit micro-step runs "
            f"one); {_OPT}: BaseOptimizer.apply accumulates the gradients and, on every k-th step, applies "
            "(g + acc_g) / steps (_update_step_fn under ops.cond(is_update_step, ...)); the docstring says "
            "'model & optimizer variables will not be updated at every step; instead they will be updated every "
            "gradient_accumulation_steps steps', which holds for the trainable variables only"),
    }
    averaging = {
        "sgd_use_ema_fit": Cited(
            AveragingRule("ema-first-copy", "live", decay=EMA_MOMENTUM),
            f"{_OPT}: _update_model_variables_moving_average averages self._trainable_variables only (momentum 0 on "
            "the first step, not_first_step = iterations != 0), and finalize_variable_values -> "
            "_overwrite_model_variables_with_average_value overwrites the trainable variables; keras/src/backend/"
            "*/trainer.py: fit calls optimizer.finalize_variable_values(self.trainable_weights) after the last epoch, "
            "so the non-trainable moving_mean/moving_variance keep their last (live) values"),
    }

    @staticmethod
    def _model(adapter_cls, spec, state):
        """(the adapter's keras module, the adapter, a Sequential model around its layer loaded with `state`)."""
        bn = adapter_cls(spec)
        K = bn._keras()
        model = K.Sequential([K.Input((spec.num_features,), dtype=spec.dtype), bn.layer])
        bn.set_state(state)
        return K, bn, model

    @staticmethod
    def _per_sample_sum(K):
        return K.ops.sum if hasattr(K, "ops") else K.backend.sum  # Keras 3 / tf_keras

    @classmethod
    def _fit(cls, adapter_cls, spec, state, batches, cotangents, optimizer_kwargs, lr):
        keras, bn, model = cls._model(adapter_cls, spec, state)
        total = cls._per_sample_sum(keras)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr, **optimizer_kwargs),
                      loss=lambda t, p: total(t * p, axis=-1))
        x, dy = np.concatenate(batches), np.concatenate(cotangents)
        model.fit(x.astype(spec.dtype), dy.astype(spec.dtype), batch_size=len(batches[0]), epochs=1, shuffle=False,
                  verbose=0)
        return bn.get_state()

    @classmethod
    def accumulate(cls, adapter_cls, idiom, spec, state, micro_batches, cotangents, lr):
        if idiom not in cls.accumulation:
            raise KeyError(idiom)
        k = len(micro_batches)
        acc = cls._fit(adapter_cls, spec, state, micro_batches, cotangents, {"gradient_accumulation_steps": k}, lr)
        large = cls._fit(adapter_cls, spec, state, [np.concatenate(micro_batches)], [np.concatenate(cotangents)],
                         {}, lr)
        snippet = (f"model.compile(optimizer=keras.optimizers.SGD({lr}, gradient_accumulation_steps={k}), "
                   "loss=lambda t, p: ops.sum(t * p, -1))\n"
                   "model.fit(x, dy, batch_size=m, shuffle=False)  # k*m samples")
        return AccumulationRun(acc, large, snippet)

    @classmethod
    def average(cls, adapter_cls, idiom, spec, state, batches, cotangents, lr):
        if idiom not in cls.averaging:
            raise KeyError(idiom)
        averaged = cls._fit(adapter_cls, spec, state, batches, cotangents,
                            {"use_ema": True, "ema_momentum": EMA_MOMENTUM}, lr)
        snippet = (f"model.compile(optimizer=keras.optimizers.SGD({lr}, use_ema=True, ema_momentum={EMA_MOMENTUM}), "
                   "loss=...)\nmodel.fit(x, dy, batch_size=m, shuffle=False)  # finalize_variable_values at the end")
        # fit leaves the model holding the averaged weights; the live ones are gone (the EMA replaced them)
        return AveragingRun(averaged, None, snippet)


_TFK_OPT = "tf_keras/src/optimizers/optimizer.py"
_TFK_BN = "tf_keras/src/layers/normalization/batch_normalization.py"


_TFK_TAPE = (f"{_TFK_BN}: call(training=True) runs assign_moving_average on moving_mean/moving_variance on every "
             "training-mode call (the TF1 layer alike, eagerly); the loop sums the k tapes' gradients of loss / k and "
             "calls optimizer.apply_gradients once")
_TFK_EMA = (f"{_TFK_OPT}: build() creates each average with add_variable_from_reference(var, 'average', "
            "initial_value=var), the weights before the first step; apply_gradients -> "
            "_update_model_variables_moving_average(var_list) averages the trained variables only (average = "
            "ema_momentum * average + (1 - ema_momentum) * var); tf_keras/src/engine/training.py: fit calls "
            "finalize_variable_values(self.trainable_variables), which overwrites them with their averages, so the "
            "non-trainable moving statistics keep their last (live) values")


class TfKerasLoops(KerasLoops):
    """tf_keras' loops (the V2 layer and the TF1 layer of tf.compat.v1.keras alike): its optimizers have no
    gradient_accumulation_steps, so accumulation is the custom loop users write (a GradientTape per micro-batch, the
    mean gradient applied once); the weight EMA is the optimizer's use_ema=True in fit."""

    accumulation = {"gradient_tape_micro_batches": Cited(AccumulationRule("every-micro-batch"), _TFK_TAPE)}
    averaging = {"sgd_use_ema_fit": Cited(AveragingRule("ema-from-initial", "live", decay=EMA_MOMENTUM), _TFK_EMA)}

    @classmethod
    def accumulate(cls, adapter_cls, idiom, spec, state, micro_batches, cotangents, lr):
        import tensorflow as tf

        if idiom not in cls.accumulation:
            raise KeyError(idiom)

        def step(pairs):
            K, bn, model = cls._model(adapter_cls, spec, state)
            opt = K.optimizers.SGD(learning_rate=lr)
            total = None
            for x, dy in pairs:
                with tf.GradientTape() as tape:
                    y = model(tf.constant(x, spec.dtype), training=True)
                    loss = tf.reduce_sum(y * tf.constant(dy, spec.dtype)) / x.shape[0] / len(pairs)
                g = tape.gradient(loss, model.trainable_variables)
                total = g if total is None else [a + b for a, b in zip(total, g)]
            opt.apply_gradients(zip(total, model.trainable_variables))
            return bn.get_state()

        k = len(micro_batches)
        snippet = ("grads = None\nfor x, dy in micro_batches:  # k of them\n    with tf.GradientTape() as tape:\n"
                   "        loss = tf.reduce_sum(model(x, training=True) * dy) / len(x) / k\n"
                   "    grads = add(grads, tape.gradient(loss, model.trainable_variables))\n"
                   f"optimizer.apply_gradients(zip(grads, model.trainable_variables))  # SGD({lr}), k = {k}")
        return AccumulationRun(step(list(zip(micro_batches, cotangents))),
                               step([(np.concatenate(micro_batches), np.concatenate(cotangents))]), snippet)
