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
        import keras

        bn = adapter_cls(spec)
        model = keras.Sequential([keras.Input((spec.num_features,), dtype=spec.dtype), bn.layer])
        bn.set_state(state)
        return keras, bn, model

    @classmethod
    def _fit(cls, adapter_cls, spec, state, batches, cotangents, optimizer_kwargs, lr):
        keras, bn, model = cls._model(adapter_cls, spec, state)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr, **optimizer_kwargs),
                      loss=lambda t, p: keras.ops.sum(t * p, axis=-1))
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
