"""Deliberately broken adapters. Each behaves like a framework that differs from its declaration in ONE way; the
meta tests assert that the conformance suites fail on exactly the property that names that way.

They wrap torch (fast, always installed) and change one behaviour or one declared value.
"""

from __future__ import annotations

import dataclasses

from adapters.base import Cited, FreezeFacts
from adapters.torch_bn import TorchBatchNorm


class BiasedRunningVar(TorchBatchNorm):
    """Feeds the running variance the BIASED batch variance while declaring torch's unbiased one."""

    id = "broken-biased-running-var"

    def forward(self, x, training):
        torch = self.torch
        m = self.module
        if training is not True or m.running_var is None:
            return super().forward(x, training)
        old = m.running_var.detach().clone()
        y = super().forward(x, training)
        xt = self._to_torch(x).double()
        dims = [d for d in range(xt.dim()) if d != 1]
        biased = xt.var(dim=dims, unbiased=False)
        with torch.no_grad():
            m.running_var.copy_(((1 - m.momentum) * old.double() + m.momentum * biased).to(old.dtype))
        return y


class MomentumWrongDirection(TorchBatchNorm):
    """Converts the canonical momentum the wrong way round (passes 1 - m to torch)."""

    id = "broken-momentum-direction"

    def __init__(self, spec):
        if spec.momentum is not None and not spec.use_defaults:
            spec = spec.replace(momentum=1.0 - spec.momentum)
        super().__init__(spec)


class InferenceUsesBatchStats(TorchBatchNorm):
    """Normalizes with batch statistics in inference mode (and leaves the running statistics alone)."""

    id = "broken-inference-batch-stats"

    def forward(self, x, training):
        if training is False:
            saved = self.get_state()
            y = super().forward(x, True)
            self.set_state(saved)
            self.module.eval()
            return y
        return super().forward(x, training)


class WrongDefaultEps(TorchBatchNorm):
    """Declares Keras' default eps for torch."""

    id = "broken-default-eps"

    @classmethod
    def declare(cls):
        return dataclasses.replace(super().declare(), default_eps=Cited(1e-3, "deliberately wrong"))


class NoSingleValueError(TorchBatchNorm):
    """Declares that a single value per channel normalizes to the offset, which torch refuses."""

    id = "broken-single-value"

    @classmethod
    def declare(cls):
        return dataclasses.replace(super().declare(), single_value_batch=Cited("offset", "deliberately wrong"))


class UpdatesWhileFrozen(TorchBatchNorm):
    """`.eval()` freezing that still moves the running statistics (a framework bug the freeze suite must catch)."""

    id = "broken-updates-while-frozen"

    def frozen_step(self, idiom, x, dy, lr):
        y = super().frozen_step(idiom, x, dy, lr)
        if idiom in ("eval", "eval_requires_grad_false"):
            with self.torch.no_grad():
                self.module.running_mean.add_(0.25)
        return y


class IgnoresFreeze(TorchBatchNorm):
    """requires_grad_(False) that does not stop the optimizer from moving scale and offset."""

    id = "broken-ignores-freeze"

    def frozen_step(self, idiom, x, dy, lr):
        y = super().frozen_step(idiom, x, dy, lr)
        if idiom in ("requires_grad_false", "eval_requires_grad_false"):
            with self.torch.no_grad():
                self.module.weight.sub_(lr)
        return y


# Which property each broken adapter must fail on (checked by meta_tests/test_broken_adapters.py).
EXPECTED_FAILURES = {
    BiasedRunningVar: {"running_var_estimator", "running_var", "train_eval_gap"},
    MomentumWrongDirection: {"running_mean", "running_var"},
    InferenceUsesBatchStats: {"inference_output"},
    WrongDefaultEps: {"default_eps"},
    NoSingleValueError: {"single_value_batch"},
    UpdatesWhileFrozen: {"freeze_running_stats_update"},
    IgnoresFreeze: {"freeze_params_update"},
}

_ = FreezeFacts  # re-exported for adapter authors who copy this file as a template


class TrainingBackwardIgnoresBatchStats(TorchBatchNorm):
    """Training-mode backward that treats the batch statistics as constants: it returns the affine-only gradient
    dx = dy * scale / sqrt(batch_var + eps), dropping the two reduction terms (a stop_gradient on mean/var)."""

    id = "broken-backward-ignores-batch-stats"

    def backward(self, x, dy, training):
        grads = super().backward(x, dy, training)
        if not training:
            return grads
        import numpy as np

        from adapters import reference

        axis = self.spec.channel_axis
        m = reference.moments(x, axis)
        scale = None if self.module.weight is None else self.module.weight.detach().double().cpu().numpy()
        dx, _, _ = reference.backward_inference(x, dy, scale, m.mean, m.var_biased, self.module.eps, axis)
        return type(grads)(np.asarray(dx), grads.dscale, grads.doffset)


EXPECTED_FAILURES[TrainingBackwardIgnoresBatchStats] = {"training_backward_dx"}


class OnePassVarianceDeclaredTwoPass(TorchBatchNorm):
    """Normalizes with a float32 one-pass variance, max(0, E[x^2] - E[x]^2), while declaring torch's two-pass one:
    the hard-input suite must catch the lost accuracy on a large mean."""

    id = "broken-one-pass-variance"

    def forward(self, x, training):
        y = super().forward(x, training)
        if training is not True:
            return y
        import numpy as np

        axis = self.spec.channel_axis
        axes = tuple(a for a in range(np.ndim(x)) if a != axis % np.ndim(x))
        x32 = np.asarray(x, np.float32)
        mean = x32.mean(axis=axes, keepdims=True, dtype=np.float32)
        var = np.maximum(np.float32(0), (x32 * x32).mean(axis=axes, keepdims=True, dtype=np.float32) - mean * mean)
        shape = [1] * np.ndim(x)
        shape[axis] = -1
        w = self.module.weight.detach().double().numpy().reshape(shape)
        b = self.module.bias.detach().double().numpy().reshape(shape)
        return (x32 - mean) / np.sqrt(var + np.float32(self.module.eps)) * w + b


EXPECTED_FAILURES[OnePassVarianceDeclaredTwoPass] = {"hard_input_training_output"}
