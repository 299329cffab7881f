"""The folding lane, framework-neutral: conv-BN folding, module fusion, quantization-aware training and BatchNorm
conversions, each a *path* that takes a trained model and returns what runs after it.

A framework implements `FoldingLane` (its adapter names it as capability "folding"): `paths` declares, per path, what
survives it (`Survives`, cited), and `run(path, model, ...)` trains the model a few steps, applies the path and
returns an `Outcome` in NumPy. The float64 oracle (`oracle_forward`, `fold`) lives here: it imports NumPy only.

Models (framework-neutral names; weights use the canonical names of ``adapters/nets/reference_net.py``):
* "conv_bn": conv 3x3 (3 -> 8, padding 1, bias) -> BatchNorm2d;
* "linear_bn": dense 6 -> 5 (bias) -> BatchNorm1d;
* "conv_bn_relu": conv_bn followed by a relu (the pattern QAT fuses into one ConvBnReLU2d);
* "conv_bn_relu_dense": the suite's small training network (``adapters/nets``);
* "conv_bn_subclass": conv_bn whose BatchNorm is a subclass that overrides ``forward`` (adds ``relu`` after it);
* "conv_bn_no_affine": conv_bn with ``affine=False, track_running_stats=False``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.adapters import reference as ref
from bnsuite.adapters.nets.reference_net import conv2d, plan

MODELS = ("conv_bn", "conv_bn_relu", "linear_bn", "conv_bn_relu_dense", "conv_bn_subclass", "conv_bn_no_affine")
IN_SHAPE = {"conv_bn": (3, 6, 6), "conv_bn_relu": (3, 6, 6), "linear_bn": (6,), "conv_bn_relu_dense": (3, 6, 6),
            "conv_bn_subclass": (3, 6, 6), "conv_bn_no_affine": (3, 6, 6)}
OUT_SHAPE = {"conv_bn": (8, 6, 6), "conv_bn_relu": (8, 6, 6), "linear_bn": (5,), "conv_bn_relu_dense": (4,),
             "conv_bn_subclass": (8, 6, 6), "conv_bn_no_affine": (8, 6, 6)}
# Every path a lane may declare (a lane declares a subset; the suite runs one test per name): what each one is.
PATH_NAMES = {
    "fuse_conv_bn_eval": "fold a conv's following BatchNorm into its weights (eval only)",
    "fuse_linear_bn_eval": "fold a dense layer's following BatchNorm into its weights (eval only)",
    "fuse_modules": "eager module fusion of conv + BatchNorm for quantization (eval)",
    "fuse_fx": "graph-mode (FX) fusion of conv + BatchNorm for quantization (eval)",
    "fx_optimization_fuse": "the FX optimization pass that folds conv + BatchNorm (eval)",
    "qat_update_bn_stats": "eager quantization-aware training of a fused conv-BN, statistics updating",
    "qat_freeze_bn_stats": "eager quantization-aware training of a fused conv-BN, statistics frozen",
    "qat_relu_update_bn_stats": "eager quantization-aware training of a fused conv-BN-relu, statistics updating",
    "qat_relu_freeze_bn_stats": "eager quantization-aware training of a fused conv-BN-relu, statistics frozen",
    "qat_convert": "eager quantization-aware training of the network a few steps, then conversion to int8",
    "pt2e_qat": "export, prepare for quantization-aware training, one training forward, move to eval",
    "convert_sync_batchnorm": "every BatchNorm converted into the synchronized BatchNorm class",
}
# Models whose BatchNorm has no running statistics (their inference normalizes with the batch's) or no affine.
BATCH_STATS_MODELS = ("conv_bn_no_affine",)
NO_AFFINE_MODELS = ("conv_bn_no_affine",)
# The reduction sizes of each model's float layers (the float tolerance adds one bound per layer): conv 3x3 over 3
# channels, dense over 6 inputs, the network's conv, 6x6 average pool and dense over 8; a batch-statistics BatchNorm
# reduces the batch of 4 x 6 x 6 values.
REDUCTIONS = {"conv_bn": [27], "conv_bn_relu": [27], "linear_bn": [6], "conv_bn_relu_dense": [27, 36, 8],
              "conv_bn_subclass": [27], "conv_bn_no_affine": [27, 144]}
# The BatchNorm attributes a path may keep or reset, in the order the report shows them.
ATTRIBUTES = ("eps", "momentum", "training", "affine", "track_running_stats")


@dataclasses.dataclass(frozen=True)
class Survives:
    """What a path does, declared per path (each value compared with the observation).

    train_model: what the path does to a model in train mode ("raises:<Error>", "fuses", "converts", "qat");
    kept: the BatchNorm attributes carried over unchanged (`ATTRIBUTES`); reset: attribute -> the value it gets
    instead; folded: the BatchNorm is folded into the preceding layer (its attributes no longer exist);
    eval_stats: what the path's inference output normalizes with ("running", "batch");
    train_stats: what its training-mode output normalizes with (None where the path has no training mode);
    stats_move: whether a training-mode forward moves the running statistics (None: no training mode);
    subclass_forward: whether an overridden BatchNorm forward still runs ("kept", "dropped", None: not applicable);
    quantized: the output passes fake quantizers (so the tolerance is the quantization step's).
    """

    train_model: str
    kept: tuple[str, ...] = ()
    reset: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    folded: bool = False
    eval_stats: str = "running"
    train_stats: str | None = None
    stats_move: bool | None = None
    subclass_forward: str | None = None
    quantized: bool = False


@dataclasses.dataclass
class Outcome:
    """What one path produced on one trained model, in float64 NumPy.

    weights: the trained model's canonical weights before the path (what the oracle folds);
    attrs_before / attrs_after: the BatchNorm attributes of the model and of what the path produced (None where the
    path folded the BatchNorm away); y_eager: the model's own inference output; y: the path's inference output;
    y_train / stats_before / stats_after: the path's training-mode output on the same input and the running
    statistics (mean, var) before and after that forward (None where the path has no training mode);
    train_model: what the path did to the model in train mode, in `Survives.train_model` words;
    quant_steps: the observed quantization steps ("input", "output": floats; "weight": one per output channel);
    converted: an int8 path's converted weights, dequantized to float64 ("conv.kernel", "conv.bias", "dense.kernel",
    "dense.bias": what the runtime computes with, the BatchNorm folded in);
    detail: a line on anything else observed (an error's text).
    """

    weights: dict[str, np.ndarray]
    attrs_before: dict[str, Any]
    attrs_after: dict[str, Any] | None
    y_eager: np.ndarray
    y: np.ndarray
    train_model: str
    y_train: np.ndarray | None = None
    stats_before: tuple[np.ndarray, np.ndarray] | None = None
    stats_after: tuple[np.ndarray, np.ndarray] | None = None
    quant_steps: dict[str, Any] = dataclasses.field(default_factory=dict)
    converted: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    detail: str = ""


class FoldingLane:
    """The interface a framework's folding lane implements (see the module docstring)."""

    # path -> (models it applies to, cited declaration)
    paths: Mapping[str, tuple[tuple[str, ...], Cited[Survives]]] = {}

    # What quantization-aware training does with a conv built with padding="same" (the suite network's conv):
    # "runs" or "raises:<Error>"; None where the lane has no QAT path.
    qat_same_padding: Cited[str] | None = None

    # The framework's default BatchNorm momentum (canonical: the weight of the new batch statistic): what a path that
    # resets the momentum falls back to; the running statistics a training forward leaves tell the two apart.
    default_momentum: Cited[float] | None = None

    def versions(self) -> dict[str, str]:
        raise NotImplementedError

    def run_qat_same_padding(self, x: np.ndarray) -> str:
        """One training-mode forward of a QAT-prepared conv(padding="same")-BN on x: "runs" or "raises:<Error>"."""
        raise NotImplementedError

    def run(self, path: str, model: str, *, batches: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray,
            eps: float, momentum: float, lr: float, weights: dict[str, np.ndarray]) -> Outcome:
        """Build `model` from the canonical `weights` with BatchNorm(eps, momentum), take one SGD step (MSE loss) per
        batch in train mode, put it in eval mode, then apply `path` and run it on `x`."""
        raise NotImplementedError


# -- the float64 oracle ----------------------------------------------------------------------------------------------
def fold(kernel, bias, scale, offset, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """W' = W * scale / sqrt(var + eps) along the output axis, b' = (b - mean) * scale / sqrt(var + eps) + offset."""
    k = np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    kernel = np.asarray(kernel, np.float64)
    return kernel * k.reshape(-1, *([1] * (kernel.ndim - 1))), (np.asarray(bias, np.float64) - mean) * k + offset


def ops_of(model: str) -> list[tuple]:
    """The model's plan, in the op words of ``reference_net.plan``."""
    if model == "conv_bn_relu":
        return [("conv", "conv", 3, 8, 3), ("bn", "bn", 8), ("relu",)]
    if model == "linear_bn":
        return [("dense", "linear", 6, 5), ("bn", "bn", 5)]
    if model == "conv_bn_relu_dense":
        return plan(model)
    return [("conv", "conv", 3, 8, 3), ("bn", "bn", 8)]


def init_weights(model: str, seed: int) -> dict[str, np.ndarray]:
    """Seeded canonical weights, exactly representable in float32, with running statistics that are not defaults."""
    rng = np.random.default_rng(seed)
    w: dict[str, np.ndarray] = {}
    for op in ops_of(model):
        if op[0] == "conv":
            w[f"{op[1]}.kernel"] = rng.standard_normal((op[3], op[2], op[4], op[4])) / np.sqrt(op[2] * op[4] ** 2)
            w[f"{op[1]}.bias"] = rng.uniform(-0.5, 0.5, op[3])
        elif op[0] == "dense":
            w[f"{op[1]}.kernel"] = rng.standard_normal((op[3], op[2])) / np.sqrt(op[2])
            w[f"{op[1]}.bias"] = rng.uniform(-0.5, 0.5, op[3])
        elif op[0] == "bn":
            c = op[2]
            w.update({f"{op[1]}.scale": rng.uniform(0.5, 1.5, c), f"{op[1]}.offset": rng.uniform(-0.5, 0.5, c),
                      f"{op[1]}.mean": rng.uniform(-0.5, 0.5, c), f"{op[1]}.var": rng.uniform(0.5, 2.0, c)})
    # channel 0 is nearly constant (a small kernel, a small running variance), as channels of trained networks often
    # are: there eps is not negligible against the variance, so a path that changes eps shows it
    first = ops_of(model)[0][1]
    w[f"{first}.kernel"][0] *= 0.01
    w["bn.var"][0] = 1e-4
    return {k: v.astype(np.float32).astype(np.float64) for k, v in w.items()}


CHANNEL_AXIS = 1  # every model is channels-first (NCHW, or (N, C) for the dense model)


def oracle_forward(model: str, weights: dict[str, np.ndarray], x: np.ndarray, *, eps: float, stats: str = "running",
                   folded: bool = False, affine: bool = True, ranges: Mapping[str, tuple] | None = None,
                   until: str | None = None) -> np.ndarray:
    """The model's output in float64: BatchNorm with its running ("running") or the batch's ("batch") statistics;
    folded=True folds each conv/dense-BN pair (running statistics) into the conv/dense weights first. ranges: the
    values an int8 model's quantizers can hold, where it has them ("input": its input, "relu": the relu's output,
    "dense": the dense layer's input); the oracle saturates there as they do. until: stop before the first op of
    that kind (e.g. "dense": the dense layer's input)."""
    ranges = ranges or {}
    h = np.asarray(x, np.float64)
    if "input" in ranges:
        h = np.clip(h, *ranges["input"])
    ops = ops_of(model)
    w = weights
    i = 0
    while i < len(ops):
        op = ops[i]
        nxt = ops[i + 1] if i + 1 < len(ops) else None
        if op[0] == until:
            return h
        if op[0] == "dense" and "dense" in ranges:
            h = np.clip(h, *ranges["dense"])
        if op[0] in ("conv", "dense") and folded and nxt is not None and nxt[0] == "bn":
            b = nxt[1]
            scale = w[f"{b}.scale"] if affine else np.ones_like(w[f"{b}.mean"])
            offset = w[f"{b}.offset"] if affine else np.zeros_like(w[f"{b}.mean"])
            k, c = fold(w[f"{op[1]}.kernel"], w[f"{op[1]}.bias"], scale, offset, w[f"{b}.mean"], w[f"{b}.var"], eps)
            h = conv2d(h, k, c) if op[0] == "conv" else h @ k.T + c
            i += 2
            continue
        if op[0] == "conv":
            h = conv2d(h, w[f"{op[1]}.kernel"], w[f"{op[1]}.bias"])
        elif op[0] == "dense":
            h = h @ w[f"{op[1]}.kernel"].T + w[f"{op[1]}.bias"]
        elif op[0] == "bn":
            scale = w[f"{op[1]}.scale"] if affine else None
            offset = w[f"{op[1]}.offset"] if affine else None
            if stats == "batch":
                h, _ = ref.forward_train(h, scale, offset, eps, CHANNEL_AXIS)
            else:
                h = ref.forward_inference(h, scale, offset, w[f"{op[1]}.mean"], w[f"{op[1]}.var"], eps, CHANNEL_AXIS)
        elif op[0] == "relu":
            h = np.maximum(h, 0.0)
            if "relu" in ranges:
                h = np.clip(h, *ranges["relu"])
        elif op[0] == "gap":
            h = h.mean(axis=(2, 3))
        i += 1
    return h


def bn_input(model: str, weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The first BatchNorm's input in float64 (the conv or dense output)."""
    op = ops_of(model)[0]
    w = weights
    x = np.asarray(x, np.float64)
    return conv2d(x, w[f"{op[1]}.kernel"], w[f"{op[1]}.bias"]) if op[0] == "conv" else \
        x @ w[f"{op[1]}.kernel"].T + w[f"{op[1]}.bias"]


def running_after(model: str, weights: dict[str, np.ndarray], x: np.ndarray, momentum: float):
    """(mean, var) of the first BatchNorm after one training forward on x: torch's convention (momentum weights the
    new batch statistic, the unbiased batch variance feeds the running variance)."""
    b = next(op[1] for op in ops_of(model) if op[0] == "bn")
    m = ref.moments(bn_input(model, weights, x), 1)
    return ref.update_running(weights[f"{b}.mean"], weights[f"{b}.var"], m, momentum, "unbiased", 1)


def magnitude(model: str, weights: dict[str, np.ndarray], x: np.ndarray, eps: float) -> float:
    """The largest output of the model folded in float64 with every weight, bias and input made absolute: the
    |W'| |h| that float roundoff scales (a batch-statistics model is folded with its batch's statistics)."""
    w = dict(weights)
    if model in BATCH_STATS_MODELS:
        m = ref.moments(bn_input(model, weights, x), 1)
        w["bn.mean"], w["bn.var"] = m.mean, m.var_biased
    ops = ops_of(model)
    absw: dict[str, np.ndarray] = {}
    for i, op in enumerate(ops):
        if op[0] in ("conv", "dense"):
            nxt = ops[i + 1] if i + 1 < len(ops) else None
            k, c = w[f"{op[1]}.kernel"], w[f"{op[1]}.bias"]
            if nxt is not None and nxt[0] == "bn":
                b = nxt[1]
                ones = np.ones_like(w[f"{b}.mean"])
                scale = w.get(f"{b}.scale", ones) if model not in NO_AFFINE_MODELS else ones
                offset = w.get(f"{b}.offset", 0 * ones) if model not in NO_AFFINE_MODELS else 0 * ones
                k, c = fold(k, c, scale, offset, w[f"{b}.mean"], w[f"{b}.var"], eps)
                c = np.abs(c) + np.abs(offset) + np.abs(w[f"{b}.mean"] * scale / np.sqrt(w[f"{b}.var"] + eps))
            absw[f"{op[1]}.kernel"], absw[f"{op[1]}.bias"] = np.abs(k), np.abs(c)
    h = np.abs(np.asarray(x, np.float64))
    for op in ops:
        if op[0] == "conv":
            h = conv2d(h, absw[f"{op[1]}.kernel"], absw[f"{op[1]}.bias"])
        elif op[0] == "dense":
            h = h @ absw[f"{op[1]}.kernel"].T + absw[f"{op[1]}.bias"]
        elif op[0] == "gap":
            h = h.mean(axis=(2, 3))
    return float(h.max())


def folded_weight_abs(model: str, weights: dict[str, np.ndarray], eps: float) -> np.ndarray:
    """sum |W'| per output channel of the first layer folded with its BatchNorm (the input quantizer's gain)."""
    op, bn = ops_of(model)[0], ops_of(model)[1]
    w = weights
    k, _ = fold(w[f"{op[1]}.kernel"], w[f"{op[1]}.bias"], w.get(f"{bn[1]}.scale", 1.0),
                w.get(f"{bn[1]}.offset", 0.0), w[f"{bn[1]}.mean"], w[f"{bn[1]}.var"], eps)
    return np.abs(k).reshape(k.shape[0], -1).sum(axis=1)


def receptive_abs(model: str, weights: dict[str, np.ndarray], x: np.ndarray) -> float:
    """The largest sum |x| over the first layer's receptive field (the weight quantizer's gain)."""
    op = ops_of(model)[0]
    k = weights[f"{op[1]}.kernel"]
    ones = np.ones((1, *k.shape[1:]))
    h = np.abs(np.asarray(x, np.float64))
    return float((conv2d(h, ones, np.zeros(1)) if op[0] == "conv" else h.sum(axis=1)).max())


def dense_abs(model: str, weights: dict[str, np.ndarray], x: np.ndarray, eps: float,
              ranges: Mapping[str, tuple] | None = None) -> tuple[np.ndarray, float]:
    """The dense layer's sum |W| per output and the largest sum |h| over its input (the oracle's, running statistics;
    the int8 gains of the network's second layer)."""
    h = oracle_forward(model, weights, x, eps=eps, ranges=ranges, until="dense")
    return np.abs(weights["dense.kernel"]).sum(axis=1), float(np.abs(h).sum(axis=1).max())


def bn_scale(weights: dict[str, np.ndarray], eps: float) -> np.ndarray:
    """|gamma| / sqrt(var + eps) of the first BatchNorm (what a QAT conv-BN folds into the conv's weights)."""
    return np.abs(weights["bn.scale"]) / np.sqrt(weights["bn.var"] + eps)
