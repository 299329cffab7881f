"""Broken tinygrad adapters: the real tinygrad adapter with ONE declared value or block wrong. They run where tinygrad
and clang are installed (the lock installs tinygrad) and skip, saying so, where they are not; each reuses the shapes
of the real adapter's cases, so its kernels are the ones the tinygrad group compiles and caches."""

from __future__ import annotations

import dataclasses

from bnsuite.adapters.blocks.tinygrad_blocks import DECLARATION as TINYGRAD_BLOCKS, TinygradBlocks
from bnsuite.adapters.tinygrad_bn import TinygradBatchNorm
from meta_tests.broken.base import ref, wrong


class TinygradBceFiniteBlocks(TinygradBlocks):
    """Declares what torch's BCELoss (which tinygrad's docstring cites) does at a probability of exactly 1: a finite
    loss and gradient, where tinygrad's unclamped log gives NaN."""

    declaration = dataclasses.replace(
        TINYGRAD_BLOCKS, bce_at_probability_one=wrong({"Tensor.binary_crossentropy": "finite"}))


class TinygradDropoutNoRescaleBlocks(TinygradBlocks):
    """Dropout that zeroes values with probability p under TRAINING but never rescales the kept ones (a port of
    Tensor.dropout that forgets the 1/(1-p))."""

    def dropout(self, rate):
        from tinygrad.helpers import TRAINING

        return lambda x: (x.rand_like() >= rate).where(x, 0) if TRAINING else x


def with_blocks(name: str, adapter_id: str, blocks_cls: type) -> type:
    """The real tinygrad adapter whose `blocks` is `blocks_cls` (a class of this module), with its docstring."""
    return type(name, (TinygradBatchNorm,), {"__doc__": blocks_cls.__doc__, "__module__": __name__,
                                             "__qualname__": name, "id": adapter_id,
                                             "capabilities": {**TinygradBatchNorm.capabilities,
                                                              "blocks": ref(blocks_cls)}})


TinygradDropoutNoRescale = with_blocks("TinygradDropoutNoRescale", "broken-tinygrad-dropout-no-rescale",
                                       TinygradDropoutNoRescaleBlocks)
TinygradBceAtOneDeclaredFinite = with_blocks("TinygradBceAtOneDeclaredFinite",
                                             "broken-tinygrad-bce-at-one-declared-finite", TinygradBceFiniteBlocks)


EXPECTED_FAILURES = {
    TinygradBceAtOneDeclaredFinite: {"bce_at_probability_one"},
    TinygradDropoutNoRescale: {"dropout_training_scaling", "block_layer_output_train", "variance_shift_train_variance",
                               "variance_shift_ratio", "variance_shift_bn_output_ratio"},
}
# The blocks' layer-by-layer checks are written whole in suites/block_layers.py, a helper the block suites call.
SEES = {TinygradDropoutNoRescale: {"test_dropout_order.py"}}
