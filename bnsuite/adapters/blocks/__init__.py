"""Small blocks around BatchNorm (Dropout, ReLU, a one-unit sigmoid/softmax), one implementation per framework
family, built from ONE framework-neutral description with weights given as float64 NumPy.

A block is a sequence of layers (``BLOCKS``: name -> layer ops). Ops:

* ``("dense", units)``: weights ``dense.kernel`` (units, in) and ``dense.bias`` (units,) (torch's layout);
* ``("bn",)``: a BatchNorm over the last axis, ``bn.scale``/``bn.offset``/``bn.mean``/``bn.var``, eps and the
  CANONICAL momentum of ``BlockSpec`` (weight of the new batch statistic, see ``bnsuite.adapters.base``);
* ``("relu",)``, ``("sigmoid",)``;
* ``("dropout",)`` with ``BlockSpec.rate`` (the probability of DROPPING a value, as every framework here spells it);
* ``("softmax", axis)``: axis -1 is the unit axis, axis 0 the batch axis.

Inputs are (N, features). A BatchNorm adapter names its framework's implementation as its "blocks" capability
(``capabilities = {..., "blocks": "module:Class"}``, resolved by bnsuite/adapters/capabilities.py). Frameworks
are imported inside the implementations only, so importing this package stays framework-free.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping

import numpy as np

from bnsuite.adapters import capabilities
from bnsuite.adapters.base import Cited, Unsupported

BLOCKS: dict[str, tuple[tuple, ...]] = {
    "dropout_bn": (("dropout",), ("bn",)),
    "bn_dropout": (("bn",), ("dropout",)),
    "linear_bn_relu": (("dense", 4), ("bn",), ("relu",)),
    "linear_relu_bn": (("dense", 4), ("relu",), ("bn",)),
    "dense_logits_1": (("dense", 1),),
    "dense_sigmoid_1": (("dense", 1), ("sigmoid",)),
    "dense_softmax_1": (("dense", 1), ("softmax", -1)),
    "softmax_over_batch": (("dense", 1), ("softmax", 0)),
}


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    kind: str  # a key of BLOCKS
    in_features: int
    rate: float = 0.0  # dropout rate (probability of dropping)
    eps: float = 1e-3
    momentum: float = 0.1  # canonical: weight of the new batch statistic
    dtype: str = "float32"
    device: str = "cpu"

    @property
    def ops(self) -> tuple[tuple, ...]:
        return BLOCKS[self.kind]

    @property
    def features(self) -> int:
        """Width of the BatchNorm (the width of the layer before it)."""
        width = self.in_features
        for op in self.ops:
            if op[0] == "dense":
                width = op[1]
        return width


@dataclasses.dataclass(frozen=True)
class BlockDeclaration:
    """What a framework's Dropout and losses do, as data with sources."""

    # "inverted": kept values are multiplied by 1/(1 - rate) at training time and inference is the identity;
    # "classic": kept values unscaled at training time, inference multiplies by (1 - rate).
    dropout_scaling: Cited[str]
    # Binary cross-entropy losses by name -> what they take: "logits" or "probabilities".
    bce_losses: Cited[Mapping[str, str]]
    # Gradient of those losses on a softmax over ONE unit (the constant 1): "zero", or "sigmoid-of-its-input" where
    # the loss reads the softmax's input as logits (so it trains a sigmoid the model does not apply), or "nan" where
    # the loss's gradient at a probability of exactly 1 is NaN; one value for every loss, or a mapping loss -> value.
    one_unit_softmax_bce: Cited[str | Mapping[str, str]] = Cited("zero", "softmax over one unit is the constant 1")
    # What each loss taking probabilities gives at a prediction of exactly 1 (a saturated sigmoid, half the targets 0):
    # loss -> "finite" (loss and gradient, as torch's BCELoss, which clamps its log at -100), "non-finite gradient" or
    # "non-finite loss and gradient"; None where not declared (its check skips, saying so).
    bce_at_probability_one: Cited[Mapping[str, str]] | None = None


class Blocks(ABC):
    """One block of one framework. `weights` maps canonical names (``dense.kernel``, ``bn.mean``, ...) to float64."""

    declaration: ClassVar[BlockDeclaration]
    # Where the implementation runs; a spec for another device is Unsupported (its cases skip).
    devices: ClassVar[tuple[str, ...]] = ("cpu",)

    def __init__(self, spec: BlockSpec, weights: Mapping[str, np.ndarray]):
        if spec.device not in self.devices:
            raise Unsupported(f"{type(self).__name__} runs on {', '.join(self.devices)} only, not {spec.device}")
        self.spec = spec

    @abstractmethod
    def forward(self, x: np.ndarray, training: bool, seed: int = 0) -> list[np.ndarray]:
        """Every layer's output in order (float64), in training or inference mode; `seed` seeds Dropout. A
        training-mode forward updates the BatchNorm's running statistics as the framework does."""

    @abstractmethod
    def weights(self) -> dict[str, np.ndarray]:
        """The current weights and BatchNorm statistics, canonical names and layouts, float64."""

    def sgd_step(self, x: np.ndarray, target: np.ndarray, loss: str, lr: float) -> float:
        """One step of the framework's own SGD optimizer on the named binary cross-entropy (a key of
        ``declaration.bce_losses``, mean over the batch) of the block's output; returns the loss before the step."""
        raise Unsupported(f"{type(self).__name__}: sgd_step not implemented")

    def probe_model(self) -> Any:
        """The block as a model bnsuite.probe accepts (torch module, Keras 3 model, (flax module, variables))."""
        raise Unsupported(f"{type(self).__name__}: the batch-dependence probe does not take this framework's models")


def build_block(adapter_cls, spec: BlockSpec, weights: Mapping[str, np.ndarray]) -> Blocks:
    """The adapter's "blocks" capability built for `spec` (CapabilityAbsent where it names none, CapabilityBroken where
    it cannot be loaded)."""
    cls = capabilities.load(adapter_cls, "blocks")
    return cls(spec, {k: np.asarray(v, np.float64) for k, v in weights.items()})


__all__ = ["BLOCKS", "BlockDeclaration", "BlockSpec", "Blocks", "build_block"]
