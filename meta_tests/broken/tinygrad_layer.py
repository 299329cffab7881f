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


class TinygradBceAtOneDeclaredFinite(TinygradBatchNorm):
    id = "broken-tinygrad-bce-at-one-declared-finite"
    capabilities = {**TinygradBatchNorm.capabilities, "blocks": ref(TinygradBceFiniteBlocks)}


EXPECTED_FAILURES = {
    TinygradBceAtOneDeclaredFinite: {"bce_at_probability_one"},
}
