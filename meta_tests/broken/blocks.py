"""Blocks around BatchNorm (Dropout order, ReLU order, one-output sigmoid/softmax; adapters/blocks): each broken
adapter is the torch BatchNorm whose `blocks` is a torch block implementation broken in one way."""

from __future__ import annotations

import dataclasses

from bnsuite.adapters.base import Unsupported
from bnsuite.adapters.blocks import BlockDeclaration
from bnsuite.adapters.blocks.torch_blocks import DECLARATION as TORCH_BLOCKS, TorchBlocks
from bnsuite.adapters.torch_bn import TorchBatchNorm
from meta_tests.broken.base import ref, torch_with, wrong


class DropoutNoRescaleBlocks(TorchBlocks):
    """torch Dropout that zeroes values with probability p but never rescales the kept ones."""

    def dropout(self, rate):
        torch = self.torch

        class NoRescale(torch.nn.Module):
            def forward(self, x):
                if not self.training:
                    return x
                return x * (torch.rand_like(x) >= rate).to(x.dtype)

        return NoRescale()


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

    declaration = BlockDeclaration(dropout_scaling=TORCH_BLOCKS.dropout_scaling,
                                   bce_losses=wrong({"BCELoss": "logits", "BCEWithLogitsLoss": "probabilities"}))


class BceAtOneDeclaredNanBlocks(TorchBlocks):
    """Declares BCELoss non-finite at a probability of exactly 1, as an unclamped log would be (torch clamps it)."""

    declaration = dataclasses.replace(TORCH_BLOCKS,
                                      bce_at_probability_one=wrong({"BCELoss": "non-finite loss and gradient"}))


def no_network(adapter_cls, arch, weights, **kw):
    raise Unsupported("a blocks-only broken adapter: its network is the torch one, checked with the real adapter")


class BlocksOnly(TorchBatchNorm):
    """The torch BatchNorm, which the real torch adapter already checks: its single-layer and network cases skip
    (keeping the meta run short), so only the block suites run with its broken `blocks`."""

    capabilities = {**TorchBatchNorm.capabilities, "network": ref(no_network)}

    def __init__(self, spec):
        raise Unsupported("a blocks-only broken adapter: its BatchNorm is the torch one, checked with the real "
                          "adapter")


def blocks_only(blocks_cls: type) -> type:
    """The BlocksOnly adapter whose `blocks` is `blocks_cls`, named after it (less "Blocks")."""
    name = blocks_cls.__name__.removesuffix("Blocks")
    return torch_with(name, "broken-blocks-" + name.lower(), base=BlocksOnly, blocks=blocks_cls)


DropoutNoRescale = blocks_only(DropoutNoRescaleBlocks)
DropoutScalesAtInference = blocks_only(DropoutScalesAtInferenceBlocks)
DropoutRateAsKeep = blocks_only(DropoutRateAsKeepBlocks)
ReluOrderIgnored = blocks_only(ReluOrderIgnoredBlocks)
BlockMomentumWrongDirection = blocks_only(BlockMomentumWrongDirectionBlocks)
SoftmaxAxisIgnored = blocks_only(SoftmaxAxisIgnoredBlocks)
SoftmaxAlwaysOverBatch = blocks_only(SoftmaxAlwaysOverBatchBlocks)
BceLossesSwapped = blocks_only(BceLossesSwappedBlocks)
BceAtOneDeclaredNan = blocks_only(BceAtOneDeclaredNanBlocks)

EXPECTED_FAILURES = {
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
    BceAtOneDeclaredNan: {"bce_at_probability_one"},
}
# The blocks' layer-by-layer checks are written whole in suites/block_layers.py, a helper the block suites call.
SEES = {DropoutNoRescale: {"test_dropout_order.py"}, DropoutScalesAtInference: {"test_dropout_order.py"},
        ReluOrderIgnored: {"test_relu_order.py"},
        BlockMomentumWrongDirection: {"test_relu_order.py", "test_dropout_order.py"}}
