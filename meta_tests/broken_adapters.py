"""Deliberately broken adapters. Each behaves like a framework that differs from its declaration in ONE way; the
meta tests assert that the conformance suites fail on exactly the property that names that way.

They wrap torch (fast, always installed) and change one behaviour or one declared value.

Adding one: write the class, then declare what it breaks in ``EXPECTED_FAILURES[Cls] = {"property", ...}``. That
declaration also decides where it runs: meta_tests/test_broken_adapters.py runs each broken adapter only in the suite
modules that write one of its expected properties whole (``"property"`` as a string literal), so a breakage costs a
few cases, not the whole suite. A property no suite writes whole (one a declared Probe names, say) needs the module
that checks it in ``SEES[Cls] = {"test_<area>.py", ...}``; ``test_every_expected_property_is_seen`` says when.
"""

from __future__ import annotations

import dataclasses

from bnsuite.adapters.base import Cited, FreezeFacts
from bnsuite.adapters.torch_bn import TorchBatchNorm


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
    BiasedRunningVar: {"running_var_estimator", "running_var", "train_eval_gap", "update_bn_var_ratio"},
    MomentumWrongDirection: {"running_mean", "running_var"},
    InferenceUsesBatchStats: {"inference_output"},
    WrongDefaultEps: {"default_eps"},
    NoSingleValueError: {"single_value_batch"},
    UpdatesWhileFrozen: {"freeze_running_stats_update"},
    IgnoresFreeze: {"freeze_params_update"},
}

# Extra suite modules a broken adapter runs in, for expected properties that no suite writes whole (see the module
# docstring); every other module is derived from EXPECTED_FAILURES.
SEES: dict[type, set[str]] = {}

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

        from bnsuite.adapters import reference

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


EXPECTED_FAILURES[OnePassVarianceDeclaredTwoPass] = {"hard_input_training_output", "hard_input_negative_variance"}


class WrongEpsInForward(TorchBatchNorm):
    """Builds the layer with ten times the requested eps (a conversion bug)."""

    id = "broken-eps-in-forward"

    def __init__(self, spec):
        super().__init__(spec if spec.use_defaults else spec.replace(eps=spec.eps * 10))


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


class NoCumulativeAverage(TorchBatchNorm):
    """Treats momentum=None as torch's default 0.1 instead of the cumulative average."""

    id = "broken-no-cumulative-average"

    def __init__(self, spec):
        super().__init__(spec.replace(momentum=0.1) if spec.momentum is None and not spec.use_defaults else spec)


class InferenceMovesRunningStats(TorchBatchNorm):
    """Inference that nudges the running mean (a layer left half in training mode)."""

    id = "broken-inference-moves-stats"

    def forward(self, x, training):
        y = super().forward(x, training)
        if training is False and self.module.running_mean is not None:
            with self.torch.no_grad():
                self.module.running_mean.add_(0.01)
                self.module.running_var.mul_(1.01)
        return y


class BatchStatsInferenceSkipsNormalization(TorchBatchNorm):
    """Without running statistics, inference returns the affine map of the raw input (no normalization)."""

    id = "broken-batch-stats-inference"

    def forward(self, x, training):
        if training is False and self.module.running_mean is None:
            import numpy as np

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
        with self.torch.no_grad():
            self.module.running_mean.add_(0.01)
            self.module.running_var.mul_(1.01)
        return grads


class WrongDeclarations(TorchBatchNorm):
    """torch behaviour under a declaration that gets defaults, directions, modes, freezing, precision and a trap
    wrong: every declared-fact check must fail on its own property."""

    id = "broken-declarations"

    @classmethod
    def declare(cls):
        d = super().declare()
        freeze = dict(d.freeze)
        freeze["eval"] = Cited(FreezeFacts("running", True, False), "deliberately wrong")
        freeze["no_grad"] = Cited(FreezeFacts("batch", True, False, error="RuntimeError"), "deliberately wrong")
        precision = dict(d.precision)
        rule = precision["float16"].value
        precision["float16"] = Cited(dataclasses.replace(rule, output="float32", state="float64"),
                                     "deliberately wrong")
        precision["bfloat16"] = Cited(dataclasses.replace(precision["bfloat16"].value, supported="error:TypeError"),
                                      "deliberately wrong")
        return dataclasses.replace(
            d, default_momentum=Cited(0.01, "deliberately wrong"),
            momentum_weights=Cited("old", "deliberately wrong"),
            default_channels_last=Cited(True, "deliberately wrong"),
            training_default=Cited("inference", "deliberately wrong"),
            batch_stats_inference=Cited("track_running_stats=False", "deliberately wrong"),
            freeze=freeze, precision=precision)

    @classmethod
    def probes(cls):
        from bnsuite.adapters.base import Probe

        return [Probe("declared_trap", Cited("error:RuntimeError", "deliberately wrong"), lambda: "ok")]


def wrong_eps_torch_net(adapter_cls, arch, weights, **kw):
    """The torch network with every BatchNorm built with 1000 times the requested eps (1e-2 for 1e-5)."""
    from bnsuite.adapters.nets import torch_net

    return torch_net.build(adapter_cls, arch, weights, **{**kw, "eps": kw["eps"] * 1000})


def frozen_conv_torch_net(adapter_cls, arch, weights, **kw):
    """The torch network whose convolution and dense weights never train (requires_grad False)."""
    from bnsuite.adapters.nets import torch_net

    net = torch_net.build(adapter_cls, arch, weights, **kw)
    for module in net.mods.modules():
        if not isinstance(module, net.torch.nn.modules.batchnorm._BatchNorm):
            for p in module.parameters(recurse=False):
                p.requires_grad_(False)
    return net


def batch_stats_torch_net(adapter_cls, arch, weights, **kw):
    """The torch network whose inference normalizes with batch statistics (BatchNorm left in training mode)."""
    from bnsuite.adapters.nets import torch_net

    net = torch_net.build(adapter_cls, arch, weights, **kw)
    forward = net.forward
    net.forward = lambda x, training: forward(x, True)
    return net


class BatchStatsNetwork(TorchBatchNorm):
    """A correct layer, but its network's inference depends on the batch."""

    id = "broken-network-batch-stats"
    network = "meta_tests.broken_adapters:batch_stats_torch_net"


class WrongEpsNetwork(TorchBatchNorm):
    """A correct layer, but its network normalizes with the wrong eps."""

    id = "broken-network-eps"
    network = "meta_tests.broken_adapters:wrong_eps_torch_net"


class FrozenConvNetwork(TorchBatchNorm):
    """A correct layer, but its network never trains the convolution and dense layers."""

    id = "broken-network-frozen-conv"
    network = "meta_tests.broken_adapters:frozen_conv_torch_net"


EXPECTED_FAILURES.update({
    WrongEpsInForward: {"training_output", "inference_output"},
    TrainingUsesRunningStats: {"training_output", "train_eval_gap"},
    NoCumulativeAverage: {"cumulative_running_mean", "cumulative_running_var"},
    InferenceMovesRunningStats: {"inference_keeps_running_mean", "inference_keeps_running_var"},
    BatchStatsInferenceSkipsNormalization: {"batch_stats_inference"},
    BackwardDoublesParamGrads: {"training_backward_dscale", "training_backward_doffset", "inference_backward_dscale",
                                "inference_backward_doffset", "training_backward_keeps_running_mean",
                                "training_backward_keeps_running_var", "inference_backward_keeps_running_mean",
                                "inference_backward_keeps_running_var"},
    WrongDeclarations: {"default_momentum", "momentum_weights", "default_channels_last", "training_default",
                        "freeze_running_stats_update", "freeze_params_update", "freeze_error",
                        "finetune_bn_running_stats_update", "finetune_bn_params_update", "finetune_error",
                        "precision_output_dtype", "precision_state_dtype", "precision_supported", "declared_trap"},
    WrongEpsNetwork: {"deep_inference_output_vs_reference", "network_inference_output", "network_loss_step1"},
    BatchStatsNetwork: {"deep_inference_batch_size_invariance"},
    FrozenConvNetwork: {"finetune_conv_dense_update"},
})
SEES[WrongDeclarations] = {"test_framework_traps.py"}  # "declared_trap" is the property of its own declared Probe


# -- architecture: each broken adapter runs only the suites that see its breakage ---------------------------------
# These properties used to fail only as a side effect of running every broken adapter through every suite. They are
# declared here, on the adapter whose breakage they see, so that test_every_check_can_fail still covers them when each
# adapter runs only the modules of its expected properties (all observed failing on torch 2.13.0).
EXPECTED_FAILURES[BiasedRunningVar] |= {"running_var_at_batch_size", "update_bn_var", "population_recompute_var",
                                        "population_recompute_bias_removed", "population_recompute_inference"}
EXPECTED_FAILURES[MomentumWrongDirection] |= {"population_recompute_mean"}
EXPECTED_FAILURES[BatchStatsInferenceSkipsNormalization] |= {"batch_stats_inference_depends_on_batch_size",
                                                             "batch_stats_inference_per_batch_size",
                                                             "batch_stats_inference_single_sample"}
EXPECTED_FAILURES[InferenceUsesBatchStats] |= {"inference_batch_size_invariance", "inference_output_full_batch"}
EXPECTED_FAILURES[InferenceMovesRunningStats] |= {"inference_repeatable"}
EXPECTED_FAILURES[NoCumulativeAverage] |= {"running_mean_at_batch_size", "update_bn_mean"}
EXPECTED_FAILURES[TrainingUsesRunningStats] |= {"training_output_batch_composition"}
EXPECTED_FAILURES[BiasedRunningVar] |= {"port_running_var", "naive_port_running_var"}
EXPECTED_FAILURES[MomentumWrongDirection] |= {"port_momentum_conversion", "port_running_mean"}
EXPECTED_FAILURES[WrongDefaultEps] |= {"naive_port_inference_output"}
EXPECTED_FAILURES[InferenceUsesBatchStats] |= {"port_inference_output"}
EXPECTED_FAILURES[TrainingUsesRunningStats] |= {"port_training_output"}
EXPECTED_FAILURES[WrongEpsInForward] |= {"freeze_normalizes_with", "inference_backward_dx"}
EXPECTED_FAILURES[WrongEpsNetwork] |= {"network_loss_step2", "network_loss_step3", "network_weight_conv.kernel",
                                       "network_weight_bn.scale", "network_weight_bn.offset", "network_weight_bn.mean",
                                       "network_weight_bn.var", "network_weight_dense.kernel",
                                       "network_weight_dense.bias"}
EXPECTED_FAILURES[WrongDeclarations] |= {"precision_training_output", "precision_inference_output",
                                         "precision_state_dtype_after_training"}
