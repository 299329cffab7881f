"""Broken single BatchNorm layers: each behaves like torch but for ONE way of computing the output, the running
statistics, the gradients or a freeze, while declaring torch's semantics."""

from __future__ import annotations

import numpy as np

from bnsuite.adapters import reference
from bnsuite.adapters.base import State
from bnsuite.adapters.torch_bn import TorchBatchNorm
from meta_tests.broken.base import ConvertsSpec, nudge_running_stats


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
        w = 1.0 / float(m.num_batches_tracked) if m.momentum is None else m.momentum  # torch's cumulative weight
        with torch.no_grad():
            m.running_var.copy_(((1 - w) * old.double() + w * biased).to(old.dtype))
        return y


class MomentumWrongDirection(ConvertsSpec):
    """Converts the canonical momentum the wrong way round (passes 1 - m to torch)."""

    id = "broken-momentum-direction"

    @staticmethod
    def convert(spec):
        return spec if spec.momentum is None else spec.replace(momentum=1.0 - spec.momentum)


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


class MovesWhileFrozen(TorchBatchNorm):
    """torch's frozen step, after which `move(lr)` changes the layer (outside autograd) under the idioms in `idioms`:
    a freeze that does not hold."""

    idioms: tuple[str, ...] = ()

    def move(self, lr):
        raise NotImplementedError

    def frozen_step(self, idiom, x, dy, lr):
        y = super().frozen_step(idiom, x, dy, lr)
        if idiom in self.idioms:
            with self.torch.no_grad():
                self.move(lr)
        return y


class UpdatesWhileFrozen(MovesWhileFrozen):
    """`.eval()` freezing that still moves the running statistics (a framework bug the freeze suite must catch)."""

    id = "broken-updates-while-frozen"
    idioms = ("eval", "eval_requires_grad_false")

    def move(self, lr):
        self.module.running_mean.add_(0.25)


class IgnoresFreeze(MovesWhileFrozen):
    """requires_grad_(False) that does not stop the optimizer from moving scale and offset."""

    id = "broken-ignores-freeze"
    idioms = ("requires_grad_false", "eval_requires_grad_false")

    def move(self, lr):
        self.module.weight.sub_(lr)


class TrainingBackwardIgnoresBatchStats(TorchBatchNorm):
    """Training-mode backward that treats the batch statistics as constants: it returns the affine-only gradient
    dx = dy * scale / sqrt(batch_var + eps), dropping the two reduction terms (a stop_gradient on mean/var)."""

    id = "broken-backward-ignores-batch-stats"

    def backward(self, x, dy, training):
        grads = super().backward(x, dy, training)
        if not training:
            return grads
        axis = self.spec.channel_axis
        m = reference.moments(x, axis)
        scale = None if self.module.weight is None else self.module.weight.detach().double().cpu().numpy()
        dx, _, _ = reference.backward_inference(x, dy, scale, m.mean, m.var_biased, self.module.eps, axis)
        return type(grads)(np.asarray(dx), grads.dscale, grads.doffset)


class OnePassVarianceDeclaredTwoPass(TorchBatchNorm):
    """Normalizes with a float32 one-pass variance, max(0, E[x^2] - E[x]^2), while declaring torch's two-pass one:
    the hard-input suite must catch the lost accuracy on a large mean."""

    id = "broken-one-pass-variance"

    def forward(self, x, training):
        y = super().forward(x, training)
        if training is not True:
            return y
        axis = self.spec.channel_axis
        axes = tuple(a for a in range(np.ndim(x)) if a != axis % np.ndim(x))
        x32 = np.asarray(x, np.float32)
        mean = x32.mean(axis=axes, keepdims=True, dtype=np.float32)
        var = (x32 * x32).mean(axis=axes, keepdims=True, dtype=np.float32) - mean * mean  # may go negative
        shape = [1] * np.ndim(x)
        shape[axis] = -1
        w = self.module.weight.detach().double().numpy().reshape(shape)
        b = self.module.bias.detach().double().numpy().reshape(shape)
        m = self.module
        if m.momentum == 1.0:  # the running variance is this batch's (unclamped) variance
            with self.torch.no_grad():
                m.running_var.copy_(self.torch.as_tensor(var.reshape(-1), dtype=m.running_var.dtype))
        return (x32 - mean) / np.sqrt(np.maximum(var, 0) + np.float32(m.eps)) * w + b


class WrongEpsInForward(ConvertsSpec):
    """Builds the layer with ten times the requested eps (a conversion bug)."""

    id = "broken-eps-in-forward"

    @staticmethod
    def convert(spec):
        return spec.replace(eps=spec.eps * 10)


class TrainingUsesRunningStats(TorchBatchNorm):
    """Updates the running statistics in training mode but normalizes with the running statistics."""

    id = "broken-training-running-stats"

    def forward(self, x, training):
        if training is not True or self.module.running_mean is None:
            return super().forward(x, training)
        super().forward(x, True)  # the update
        y = super().forward(x, False)
        self.module.train()
        return y


class NoCumulativeAverage(ConvertsSpec):
    """Treats momentum=None as torch's default 0.1 instead of the cumulative average."""

    id = "broken-no-cumulative-average"

    @staticmethod
    def convert(spec):
        return spec.replace(momentum=0.1) if spec.momentum is None else spec


class InferenceMovesRunningStats(TorchBatchNorm):
    """Inference that nudges the running mean (a layer left half in training mode)."""

    id = "broken-inference-moves-stats"

    def forward(self, x, training):
        y = super().forward(x, training)
        if training is False and self.module.running_mean is not None:
            nudge_running_stats(self)
        return y


class BatchStatsInferenceSkipsNormalization(TorchBatchNorm):
    """Without running statistics, inference returns the affine map of the raw input (no normalization)."""

    id = "broken-batch-stats-inference"

    def forward(self, x, training):
        if training is False and self.module.running_mean is None:
            shape = [1] * np.ndim(x)
            shape[self.spec.channel_axis] = -1
            st = self.get_state()
            return np.asarray(x, np.float64) * st.scale.reshape(shape) + st.offset.reshape(shape)
        return super().forward(x, training)


class BackwardDoublesParamGrads(TorchBatchNorm):
    """A backward pass (both modes) whose scale and offset gradients are twice the true ones and which moves the
    running statistics."""

    id = "broken-backward-param-grads"

    def backward(self, x, dy, training):
        grads = super().backward(x, dy, training)
        grads.dscale, grads.doffset = grads.dscale * 2, grads.doffset * 2
        nudge_running_stats(self)
        return grads


# The first names are the breakage's own properties; the rest are checks that see it under another name (running
# statistics ported to another framework, recomputed over a population, measured at other batch sizes).
class ReportsInitialAffineParams(TorchBatchNorm):
    """get_state reports the affine parameters the layer was built with (scale 1, offset 0), not the loaded ones."""

    id = "broken-initial-affine-params"

    def get_state(self):
        s = super().get_state()
        if s.scale is None:
            return s
        return State(np.ones_like(s.scale), np.zeros_like(s.offset), s.mean, s.var)


EXPECTED_FAILURES = {
    BiasedRunningVar: {"running_var_estimator", "running_var", "train_eval_gap", "update_bn_var_ratio",
                       "running_var_at_batch_size", "update_bn_var", "population_recompute_var",
                       "population_recompute_bias_removed", "population_recompute_inference", "port_running_var",
                       "naive_port_running_var"},
    MomentumWrongDirection: {"running_mean", "running_var", "population_recompute_mean", "port_momentum_conversion",
                             "port_running_mean"},
    InferenceUsesBatchStats: {"inference_output", "inference_batch_size_invariance", "inference_output_full_batch",
                              "port_inference_output"},
    UpdatesWhileFrozen: {"freeze_running_stats_update"},
    IgnoresFreeze: {"freeze_params_update"},
    TrainingBackwardIgnoresBatchStats: {"training_backward_dx"},
    OnePassVarianceDeclaredTwoPass: {"hard_input_training_output", "hard_input_negative_variance"},
    WrongEpsInForward: {"training_output", "inference_output", "freeze_normalizes_with", "inference_backward_dx"},
    TrainingUsesRunningStats: {"training_output", "train_eval_gap", "training_output_batch_composition",
                               "port_training_output"},
    NoCumulativeAverage: {"cumulative_running_mean", "cumulative_running_var", "running_mean_at_batch_size",
                          "update_bn_mean"},
    ReportsInitialAffineParams: {"training_keeps_scale", "training_keeps_offset"},
    InferenceMovesRunningStats: {"inference_keeps_running_mean", "inference_keeps_running_var",
                                 "inference_repeatable"},
    BatchStatsInferenceSkipsNormalization: {"batch_stats_inference", "batch_stats_inference_depends_on_batch_size",
                                            "batch_stats_inference_per_batch_size",
                                            "batch_stats_inference_single_sample"},
    BackwardDoublesParamGrads: {"training_backward_dscale", "training_backward_doffset", "inference_backward_dscale",
                                "inference_backward_doffset", "training_backward_keeps_running_mean",
                                "training_backward_keeps_running_var", "inference_backward_keeps_running_mean",
                                "inference_backward_keeps_running_var"},
}
