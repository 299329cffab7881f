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

import numpy as np

from bnsuite.adapters.base import Cited, FreezeFacts, Unsupported
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


# -- normalization layers (LayerNorm, GroupNorm, InstanceNorm, RMSNorm) -------------------------------------------------
from bnsuite.adapters.norms.torch_norms import TorchNorms  # noqa: E402


class BatchAxisNorms(TorchNorms):
    """A LayerNorm whose statistics also reduce over the batch axis (one mean and variance for the whole batch)."""

    def forward(self, x, training):
        if self.spec.kind != "layer":
            return super().forward(x, training)
        torch, m = self.torch, self.module
        xt = torch.as_tensor(x, dtype=self.dtype)
        with torch.no_grad():
            mean = xt.mean()
            var = ((xt - mean) ** 2).mean()
            y = (xt - mean) / torch.sqrt(var + m.eps)
            if m.weight is not None:
                y = y * m.weight + m.bias
        return y.double().numpy()


class WrongNormsDeclaration(TorchNorms):
    """Correct torch layers, every declared fact of the norm adapter wrong. Its LayerNorm rms_scaling option is a
    true RMSNorm (mean square) while it declares Keras' variance."""

    def __init__(self, spec):
        if spec.rms_scaling:
            spec = spec.replace(kind="rms", rms_scaling=False)
        super().__init__(spec)

    @classmethod
    def declare(cls):
        decl = TorchNorms.declare()
        kinds = dict(decl.kinds)
        wrong = {"layer": dict(default_eps=1e-3, default_axes="non-batch"), "group": dict(variance="one-pass"),
                 "instance": dict(default_affine=True)}
        for kind, changes in wrong.items():
            facts = kinds[kind]
            kinds[kind] = Cited(dataclasses.replace(facts.value, **changes), facts.source)
        return dataclasses.replace(
            decl, kinds=kinds, group_layout=Cited("strided", "wrong on purpose"),
            instance_running_stats=Cited("instance", "wrong on purpose"),
            instance_running_stats_default=Cited(True, "wrong on purpose"),
            layer_rms_scaling=Cited("variance", "wrong on purpose"))


class BatchAxisLayerNorm(TorchBatchNorm):
    """A correct BatchNorm; its framework's LayerNorm reduces over the batch axis."""

    id = "broken-layernorm-batch-axis"
    norms = "meta_tests.broken_adapters:BatchAxisNorms"


class WrongNormDeclarations(TorchBatchNorm):
    """A correct BatchNorm; its norm adapter declares every fact wrong."""

    id = "broken-norm-declarations"
    norms = "meta_tests.broken_adapters:WrongNormsDeclaration"


EXPECTED_FAILURES.update({
    BatchAxisLayerNorm: {"norm_output_vs_oracle", "norm_batch_size_independent", "norm_batch_composition_independent"},
    WrongNormDeclarations: {"norm_default_eps", "norm_default_axes", "norm_default_affine", "norm_variance_algorithm",
                            "group_norm_channel_layout", "instance_norm_default_track_running_stats",
                            "instance_norm_inference_statistics", "layer_norm_rms_scaling_divides_by"},
})


# -- blocks around BatchNorm (Dropout order, ReLU order, one-output sigmoid/softmax) ---------------------------------
# Each is a correct BatchNorm whose `blocks` names a torch block implementation broken in one way.
from bnsuite.adapters.blocks import BlockDeclaration  # noqa: E402
from bnsuite.adapters.blocks.torch_blocks import DECLARATION as _TORCH_BLOCKS, TorchBlocks  # noqa: E402


class _DropoutNoRescaleModule:
    """torch Dropout that zeroes values with probability p but never rescales the kept ones."""

    def __new__(cls, torch, rate):
        class NoRescale(torch.nn.Module):
            def forward(self, x):
                if not self.training:
                    return x
                return x * (torch.rand_like(x) >= rate).to(x.dtype)

        return NoRescale()


class DropoutNoRescaleBlocks(TorchBlocks):
    def dropout(self, rate):
        return _DropoutNoRescaleModule(self.torch, rate)


class DropoutScalesAtInferenceBlocks(TorchBlocks):
    """Inverted Dropout at training time that ALSO multiplies by 1 - p at inference (both conventions at once)."""

    def dropout(self, rate):
        torch = self.torch

        class Both(torch.nn.Dropout):
            def forward(self, x):
                return super().forward(x) if self.training else x * (1.0 - self.p)

        return Both(rate)


class DropoutRateAsKeepBlocks(TorchBlocks):
    """Passes the drop rate where the keep probability belongs."""

    def dropout(self, rate):
        return self.torch.nn.Dropout(1.0 - rate)


class ReluOrderIgnoredBlocks(TorchBlocks):
    """Builds linear -> BN -> ReLU whatever order it is asked for."""

    def __init__(self, spec, weights):
        if spec.kind == "linear_relu_bn":
            spec = dataclasses.replace(spec, kind="linear_bn_relu")
        super().__init__(spec, weights)


class BlockMomentumWrongDirectionBlocks(TorchBlocks):
    """Converts the canonical momentum the wrong way round in its BatchNorm."""

    def batchnorm(self, width, eps, momentum):
        return self.torch.nn.BatchNorm1d(width, eps=eps, momentum=1.0 - momentum)


class SoftmaxAxisIgnoredBlocks(TorchBlocks):
    """Every softmax normalizes over the units, whatever axis it is asked for."""

    def softmax(self, axis):
        return self.torch.nn.Softmax(dim=-1)


class SoftmaxAlwaysOverBatchBlocks(TorchBlocks):
    """Every softmax normalizes over the batch axis, whatever axis it is asked for."""

    def softmax(self, axis):
        return self.torch.nn.Softmax(dim=0)


class BceLossesSwappedBlocks(TorchBlocks):
    """Declares BCELoss to take logits and BCEWithLogitsLoss probabilities."""

    declaration = BlockDeclaration(
        dropout_scaling=_TORCH_BLOCKS.dropout_scaling,
        bce_losses=Cited({"BCELoss": "logits", "BCEWithLogitsLoss": "probabilities"}, "broken on purpose"))


def no_network(adapter_cls, arch, weights, **kw):
    from bnsuite.adapters.base import Unsupported

    raise Unsupported("a blocks-only broken adapter: its network is the torch one, checked with the real adapter")


class _BlocksOnly(TorchBatchNorm):
    """The torch BatchNorm, which the real torch adapter already checks: its single-layer and network cases skip
    (keeping the meta run short), so only the block suites run with its broken `blocks`."""

    network = "meta_tests.broken_adapters:no_network"

    def __init__(self, spec):
        from bnsuite.adapters.base import Unsupported

        raise Unsupported("a blocks-only broken adapter: its BatchNorm is the torch one, checked with the real "
                          "adapter")


def _with_blocks(name: str, blocks_cls: type, doc: str) -> type:
    return type(name, (_BlocksOnly,), {"__doc__": doc, "__module__": __name__,
                                       "id": "broken-blocks-" + name.lower(),
                                       "blocks": f"meta_tests.broken_adapters:{blocks_cls.__name__}"})


DropoutNoRescale = _with_blocks("DropoutNoRescale", DropoutNoRescaleBlocks, "A Dropout that does not rescale.")
DropoutScalesAtInference = _with_blocks("DropoutScalesAtInference", DropoutScalesAtInferenceBlocks,
                                        "A Dropout that scales at inference too.")
DropoutRateAsKeep = _with_blocks("DropoutRateAsKeep", DropoutRateAsKeepBlocks, "A Dropout that keeps with p = rate.")
ReluOrderIgnored = _with_blocks("ReluOrderIgnored", ReluOrderIgnoredBlocks, "ReLU always after the BatchNorm.")
BlockMomentumWrongDirection = _with_blocks("BlockMomentumWrongDirection", BlockMomentumWrongDirectionBlocks,
                                           "The blocks' BatchNorm gets 1 - momentum.")
SoftmaxAxisIgnored = _with_blocks("SoftmaxAxisIgnored", SoftmaxAxisIgnoredBlocks, "Softmax always over the units.")
SoftmaxAlwaysOverBatch = _with_blocks("SoftmaxAlwaysOverBatch", SoftmaxAlwaysOverBatchBlocks,
                                      "Softmax always over the batch.")
BceLossesSwapped = _with_blocks("BceLossesSwapped", BceLossesSwappedBlocks, "Logits/probabilities losses swapped.")

EXPECTED_FAILURES.update({
    DropoutNoRescale: {"dropout_training_scaling", "block_layer_output_train", "variance_shift_train_variance",
                       "variance_shift_ratio", "variance_shift_bn_output_ratio"},
    DropoutScalesAtInference: {"dropout_inference_scaling", "block_layer_output_inference"},
    DropoutRateAsKeep: {"dropout_keep_fraction", "dropout_training_scaling"},
    ReluOrderIgnored: {"relu_order_bn_input_zeros", "block_layer_output_train", "block_layer_output_inference"},
    BlockMomentumWrongDirection: {"block_running_mean", "block_running_var"},
    SoftmaxAxisIgnored: {"softmax_batch_size_dependence", "probe_names_softmax_over_batch"},
    SoftmaxAlwaysOverBatch: {"softmax_one_unit_output", "softmax_one_unit_bce_gradient",
                             "probe_softmax_over_units_invariant"},
    BceLossesSwapped: {"bce_loss_value", "bce_loss_gradient"},
})


# -- multi-replica BatchNorm (suites/test_replicas.py) --------------------------------------------------------------
# Broken engines run the real torch.distributed machinery (gloo, DDP); each differs from its declaration in one way.
from bnsuite.adapters.replicas import IdiomFacts, ReplicaDeclaration  # noqa: E402
from bnsuite.adapters.replicas.torch_ddp import DECLARATION as _TORCH_REPLICAS, TorchReplicas  # noqa: E402


class ClaimsGlobalStatsEngine(TorchReplicas):
    """Declares that DDP with broadcast_buffers=False normalizes with global statistics and keeps equal global
    running statistics, and that SyncBatchNorm runs on CPU; the real engine computes local ones / refuses."""

    @classmethod
    def declare(cls):
        local = _TORCH_REPLICAS.idioms["ddp_broadcast_buffers_false"]
        sync = _TORCH_REPLICAS.idioms["sync_batchnorm_without_ddp"]
        return ReplicaDeclaration(_TORCH_REPLICAS.framework, _TORCH_REPLICAS.default, {
            "ddp_broadcast_buffers_false": Cited(dataclasses.replace(
                local.value, normalizes="global", running_stats="global", replicas_equal=True, gradient="global",
                one_sample="ok"), "broken: claims synchronized statistics"),
            "sync_batchnorm_without_ddp": Cited(dataclasses.replace(sync.value, normalizes="global"),
                                                "broken: claims SyncBatchNorm runs on CPU"),
        })


class DriftingRunningStatsEngine(TorchReplicas):
    """A hand-rolled CPU SyncBatchNorm: normalizes with global statistics (two all-reduces, differentiable) but
    updates each replica's running statistics from its own shard, while declaring them global and equal."""

    @classmethod
    def declare(cls):
        facts = IdiomFacts(how="hand-rolled SyncBatchNorm under DistributedDataParallel(broadcast_buffers=False)",
                           normalizes="global", running_stats="global", replicas_equal=True, gradient="global")
        return ReplicaDeclaration("torch", _TORCH_REPLICAS.default,
                                  {"hand_rolled_sync": Cited(facts, "broken: running statistics not reduced")})

    @classmethod
    def build(cls, torch, idiom, p, group, device):
        from torch.distributed.nn.functional import all_reduce

        class HandRolledSync(torch.nn.BatchNorm1d):
            def forward(self, x):
                count = all_reduce(torch.tensor([float(x.shape[0])]), group=group)
                mean = all_reduce(x.sum(0), group=group) / count
                var = all_reduce(((x - mean) ** 2).sum(0), group=group) / count
                with torch.no_grad():  # the breakage: local statistics feed the running ones
                    if x.shape[0] > 1:
                        m = self.momentum
                        self.running_mean.mul_(1 - m).add_(m * x.mean(0))
                        self.running_var.mul_(1 - m).add_(m * x.var(0, unbiased=True))
                return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias

        bn = HandRolledSync(p["scale"].size, eps=1e-3, momentum=0.1)
        with torch.no_grad():
            for name, key in (("weight", "scale"), ("bias", "offset"), ("running_mean", "mean"),
                              ("running_var", "var")):
                getattr(bn, name).copy_(torch.as_tensor(p[key], dtype=torch.float32))
        return torch.nn.parallel.DistributedDataParallel(bn, process_group=group, broadcast_buffers=False), bn


class HungCollectiveEngine(TorchReplicas):
    """Replica 1 never joins the all-reduce replica 0 waits in: the worker must be killed at its timeout."""

    timeout_s = 6.0

    @classmethod
    def declare(cls):
        return ReplicaDeclaration("torch", _TORCH_REPLICAS.default,
                                  {"ddp_broadcast_buffers": _TORCH_REPLICAS.idioms["ddp_broadcast_buffers"]})

    def measure(self, p):
        import torch.multiprocessing as mp

        from bnsuite.adapters.replicas.torch_ddp import _free_port

        mp.start_processes(_hang_rank, args=(_free_port(),), nprocs=2, join=True, start_method="fork")
        return {}


def _hang_rank(rank, port):
    import datetime
    import time

    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=600))
    if rank == 0:
        dist.all_reduce(torch.ones(3))
    else:
        time.sleep(600)


class ReplicasClaimGlobal(TorchBatchNorm):
    id = "broken-replicas-claim-global"
    replicas = "meta_tests.broken_adapters:ClaimsGlobalStatsEngine"


class ReplicasRunningStatsDrift(TorchBatchNorm):
    id = "broken-replicas-running-stats-drift"
    replicas = "meta_tests.broken_adapters:DriftingRunningStatsEngine"


class ReplicasHungCollective(TorchBatchNorm):
    id = "broken-replicas-hung-collective"
    replicas = "meta_tests.broken_adapters:HungCollectiveEngine"


EXPECTED_FAILURES.update({
    ReplicasClaimGlobal: {"replica_normalizes_with", "replica_forward", "replica_gradient_rule", "replica_dx",
                          "replica_running_stats_equal", "replica_running_mean", "replica_running_var",
                          "replica_running_stats_rule", "replica_outcome", "replica_shard_outcome",
                          "replica_shard_forward"},
    ReplicasRunningStatsDrift: {"replica_running_stats_equal", "replica_running_mean", "replica_running_var",
                                "replica_running_stats_rule"},
    ReplicasHungCollective: {"replica_worker_finished"},
})


# -- inputs that break BatchNorm (suites/test_edge_inputs.py) --------------------------------------------------------
class NanSpillsAcrossChannels(TorchBatchNorm):
    """A NaN or inf in one channel of a training batch reaches every channel (a reduction over the whole tensor leaks
    into each channel's output and running statistics), while the oracle keeps it in its channel."""

    id = "broken-nan-spills"

    def forward(self, x, training):
        y = super().forward(x, training)
        if training is True and not np.isfinite(x).all():
            leak = 0.0 * float(np.sum(x))  # NaN
            y = y + leak
            with self.torch.no_grad():
                self.module.running_mean.add_(leak)
                self.module.running_var.add_(leak)
        return y


class EmptyBatchPoisonsStats(TorchBatchNorm):
    """An empty batch sets the running statistics to NaN in either mode, while declaring torch's 'unchanged'."""

    id = "broken-empty-batch"

    def forward(self, x, training):
        y = super().forward(x, training)
        if x.size == 0:
            with self.torch.no_grad():
                self.module.running_mean.fill_(float("nan"))
                self.module.running_var.fill_(float("nan"))
        return y


class EpsClampedSilently(TorchBatchNorm):
    """Replaces eps <= 0 by 1e-5 without a word, while declaring torch's ValueError."""

    id = "broken-eps-clamped"

    def __init__(self, spec):
        if not spec.use_defaults and spec.eps <= 0:
            spec = spec.replace(eps=1e-5)
        super().__init__(spec)


class InferenceInHalf(TorchBatchNorm):
    """Inference computed in float16 (a half-precision kernel): outputs beyond 65504 overflow to inf and every
    output keeps only 11 bits."""

    id = "broken-inference-half"

    def forward(self, x, training):
        y = super().forward(x, training)
        if training is False:
            y = y.astype(np.float16).astype(np.float64)
        return y


class EmptyBatchAndEpsMishandled(EmptyBatchPoisonsStats, EpsClampedSilently):
    """Both breakages above in one adapter: each shows only on its own input (an empty batch, eps <= 0), and one
    adapter runs the whole suite once instead of twice (each broken adapter costs a full suite run in the meta test)."""

    id = "broken-empty-batch-and-eps"


EXPECTED_FAILURES.update({
    NanSpillsAcrossChannels: {"nonfinite_stays_in_its_channel", "nonfinite_running_stats_other_channels",
                              "nonfinite_poisoned_running_stats", "nonfinite_inference_afterwards"},
    EmptyBatchAndEpsMishandled: {"empty_batch_training", "empty_batch_inference", "eps_zero", "eps_negative",
                                 "nonpositive_eps_other_channels"},
    InferenceInHalf: {"extreme_inference_output"},
})


def _torch_edge_facts(**extra):
    from bnsuite.adapters import edge_facts

    return {**edge_facts.TORCH, **{k: Cited(v, "deliberately declared for a broken adapter") for k, v in extra.items()}}


class MaskIgnored(TorchBatchNorm):
    """Accepts a mask and ignores it (statistics over every position), while declaring masked statistics."""

    id = "broken-mask-ignored"

    @classmethod
    def edge_inputs(cls):
        keys = ("mask_NLC", "mask_NLC_one_channel", "mask_NHWC", "mask_NCL", "mask_NCHW")
        return _torch_edge_facts(**{k: "masked statistics, unbiased variance" for k in keys})

    def forward_masked(self, x, mask, training):
        return self.forward(x, training)


class ContiguousGhostBatches(TorchBatchNorm):
    """Ghost batches of contiguous samples, each updating the running statistics in turn, while declaring tf_keras'
    strided ghost batches and their averaged biased moments."""

    id = "broken-ghost-batches"
    _vbs = None

    @classmethod
    def edge_inputs(cls):
        return _torch_edge_facts(virtual_batch_grouping="strided ghost batches",
                                 virtual_batch_running_stats="mean of ghost-batch moments, biased")

    def rebuild_with_virtual_batch_size(self, virtual_batch_size):
        self.module.reset_parameters()
        self._vbs = virtual_batch_size

    def forward(self, x, training):
        if training is not True or self._vbs is None:
            return super().forward(x, training)
        return np.concatenate([super(ContiguousGhostBatches, self).forward(x[i:i + self._vbs], True)
                               for i in range(0, x.shape[0], self._vbs)])


class SeveralAxesReshapeBug(TorchBatchNorm):
    """BatchNorm over (width, channel) of NHWC by flattening the feature axes in the wrong order: the statistics are
    computed channel-major and the output is reshaped back without undoing the swap."""

    id = "broken-several-axes"
    _shape = None

    @classmethod
    def edge_inputs(cls):
        return _torch_edge_facts(several_axes="supported")

    def rebuild_with_axes(self, axes, x_shape):
        if tuple(axes) != (2, 3) or len(x_shape) != 4:
            raise Unsupported("this broken adapter flattens (width, channel) of NHWC only")
        n_w, n_c = x_shape[2], x_shape[3]
        self.module = self.torch.nn.BatchNorm1d(n_w * n_c, eps=self.spec.eps, momentum=self.spec.momentum,
                                                dtype=getattr(self.torch, self.spec.dtype))
        self._shape = x_shape

    def forward(self, x, training):
        if self._shape is None:
            return super().forward(x, training)
        n, h, w, c = x.shape
        flat = np.swapaxes(x, 2, 3).reshape(n * h, c * w)  # channel-major features
        self.module.train(bool(training))
        with self.torch.no_grad():
            y = self.module(self.torch.as_tensor(flat, dtype=self.module.weight.dtype))
        return y.double().numpy().reshape(n, h, w, c)  # the swap is not undone


class ConstructedModeWins(TorchBatchNorm):
    """A use_running_average given at construction wins over the call's, while declaring flax.nnx's (the call
    wins)."""

    id = "broken-constructed-mode"

    @classmethod
    def edge_inputs(cls):
        from bnsuite.adapters import edge_facts

        return {**edge_facts.TORCH, **{k: v for k, v in edge_facts.FLAX_NNX_OPTIONS.items()
                                        if k.startswith("use_running_average")}}

    def forward_constructed_mode(self, x, constructed, call):
        saved = self.get_state()
        y = self.forward(x, training=not constructed)
        self.set_state(saved)
        return y


class EdgeOptionsMishandled(MaskIgnored, ContiguousGhostBatches, SeveralAxesReshapeBug, ConstructedModeWins):
    """The four option breakages above in one adapter: each lives in its own optional method (a mask, ghost batches,
    several axes, the construction-time mode) and shows only in its own test; one suite run instead of four."""

    id = "broken-edge-options"

    @classmethod
    def edge_inputs(cls):
        return {**MaskIgnored.edge_inputs(), **ContiguousGhostBatches.edge_inputs(),
                **SeveralAxesReshapeBug.edge_inputs(), **ConstructedModeWins.edge_inputs()}


EXPECTED_FAILURES.update({
    EdgeOptionsMishandled: {"masked_batch_statistics", "virtual_batch_grouping", "virtual_batch_running_stats",
                            "several_axes_training_output", "several_axes_running_stats",
                            "use_running_average_constructed_and_called"},
})


# -- mixed precision (suites/test_mixed_precision.py) ----------------------------------------------------------------

def _stats_in_input_dtype(module, dtype):
    """Running statistics stored in the activations' dtype; scale/offset stay float32 and are cast per call."""
    import torch.nn.functional as F

    module.running_mean.data = module.running_mean.data.to(dtype)
    module.running_var.data = module.running_var.data.to(dtype)
    module.forward = lambda x: F.batch_norm(x, module.running_mean, module.running_var, module.weight.to(dtype),
                                            module.bias.to(dtype), module.training, module.momentum, module.eps)


def stats_in_input_dtype_step(cls, idiom, spec, state, x):
    from bnsuite.adapters import mixed_precision

    return mixed_precision.torch_step(cls, idiom, spec, state, x, prepare=_stats_in_input_dtype)


def _drops_scale(module, dtype):
    """The mixed-precision path loses the loaded scale (weight reset to 1)."""
    module.weight.data.fill_(1.0)


def drops_scale_step(cls, idiom, spec, state, x):
    from bnsuite.adapters import mixed_precision

    return mixed_precision.torch_step(cls, idiom, spec, state, x, prepare=_drops_scale)


class MixedStatsInInputDtype(TorchBatchNorm):
    """Under mixed precision, stores the running statistics in the input dtype while declaring float32."""

    id = "broken-mixed-stats-in-input-dtype"
    mixed_precision_runner = "meta_tests.broken_adapters:stats_in_input_dtype_step"


class MixedDropsScale(TorchBatchNorm):
    """Under mixed precision, normalizes without the layer's scale."""

    id = "broken-mixed-drops-scale"
    mixed_precision_runner = "meta_tests.broken_adapters:drops_scale_step"


class MixedWrongDeclarations(TorchBatchNorm):
    """torch's mixed-precision behaviour under declarations that get the output dtype, the parameter dtype and the
    support of an idiom wrong."""

    id = "broken-mixed-declarations"

    @classmethod
    def declare(cls):
        d = super().declare()
        mixed = dict(d.mixed_precision)
        mixed["autocast-bfloat16"] = Cited(dataclasses.replace(mixed["autocast-bfloat16"].value, output="float32",
                                                               params="bfloat16"), "deliberately wrong")
        mixed["defaults-float16"] = Cited(dataclasses.replace(mixed["defaults-float16"].value,
                                                              supported="error:RuntimeError"), "deliberately wrong")
        return dataclasses.replace(d, mixed_precision=mixed)


EXPECTED_FAILURES.update({
    MixedStatsInInputDtype: {"mixed_state_dtype", "mixed_state_dtype_after_training", "mixed_running_mean",
                             "mixed_running_var", "mixed_wide_running_var_finite", "mixed_wide_running_var"},
    MixedDropsScale: {"mixed_training_output", "mixed_inference_output", "mixed_wide_training_output"},
    MixedWrongDeclarations: {"mixed_output_dtype", "mixed_params_dtype", "mixed_supported"},
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

# The blocks' layer-by-layer checks are written whole in suites/block_layers.py, a helper the block suites call.
SEES[DropoutNoRescale] = {"test_dropout_order.py"}
SEES[DropoutScalesAtInference] = {"test_dropout_order.py"}
SEES[ReluOrderIgnored] = {"test_relu_order.py"}
SEES[BlockMomentumWrongDirection] = {"test_relu_order.py", "test_dropout_order.py"}
