"""What the audit's readers return: one BatchNorm layer's facts in the suite's canonical terms (BNInfo), and the one
error they raise on bad input (ReadError)."""

from __future__ import annotations

import dataclasses

import numpy as np


class ReadError(Exception):
    """The object cannot be read as a model with BatchNorm layers; str() is one line for the user."""


@dataclasses.dataclass
class BNInfo:
    name: str
    type: str
    framework: str  # "torch", "keras", "tf_keras", "flax", "flax-nnx", "tf1-graph"
    channels: int
    eps: float
    momentum: float | None  # canonical: weight of the NEW batch statistic (None: torch's cumulative average)
    momentum_native: float | None
    momentum_weights: str  # which term the framework's own momentum weights: "new" or "old"
    channel_axis: int  # axis of the input holding the channels (1 channels-first, -1 channels-last)
    estimator: str  # running-variance estimator of the code path this layer takes: "unbiased" or "biased"
    mode: str  # "training", "inference", or "follows the call" (Keras: the call's training argument)
    tracking: bool  # keeps running statistics
    frozen: bool  # its scale and offset take no optimizer update (requires_grad False / trainable False)
    stats_still: bool  # its running statistics stay still in a training step of the framework's loop
    dtype: str
    trainable_attr: bool | None = None  # tf1-graph: `trainable` of the live layer object, where one is found
    mean: np.ndarray | None = dataclasses.field(default=None, repr=False)
    var: np.ndarray | None = dataclasses.field(default=None, repr=False)
    scale: np.ndarray | None = dataclasses.field(default=None, repr=False)
    offset: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def facts(self) -> dict:
        """The canonical facts, JSON-ready (no arrays)."""
        d = dataclasses.asdict(self)
        for k in ("mean", "var", "scale", "offset"):
            d.pop(k)
        return d


def _f64(a) -> np.ndarray | None:
    return None if a is None else np.asarray(a, np.float64).reshape(-1)


def _canonical(weights: str, native: float | None) -> float | None:
    return None if native is None else (native if weights == "new" else round(1.0 - native, 12))
