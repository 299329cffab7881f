"""Helpers for the block suites (test_dropout_order, test_relu_order, test_single_output_activation): build a block
for a case, seeded weights, read Dropout masks off the outputs, and check a block layer by layer against the oracle.

Each layer is compared with the oracle applied to the framework's OWN input to that layer, so each bound is one
layer's rounding (suites/tolerances/, blocks).
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters import blocks, capabilities
from bnsuite.adapters.base import Unsupported
from bnsuite.adapters.blocks import reference as bref
from bnsuite.suites import checks as ch
from bnsuite.suites import data
from bnsuite.suites import tolerances as tl


def declaration(case) -> blocks.BlockDeclaration:
    """The adapter's block declaration: skips where it names no "blocks" capability, fails where it is broken."""
    __tracebackhide__ = True
    return capabilities.require(case.adapter, "blocks").declaration


def build(case, rec, spec: blocks.BlockSpec, weights) -> blocks.Blocks:
    try:
        blk = blocks.build_block(case.adapter, spec, weights)
    except Unsupported as e:
        case.skip_refused(e)
    rec.snippet = f"bnsuite.adapters.blocks.build_block({case.adapter.id!r}, {spec}, weights)"
    return blk


def weights(spec: blocks.BlockSpec, seed: int = 3, bias_shift: float = 0.0) -> dict[str, np.ndarray]:
    """Seeded weights for every layer of the block, rounded to the spec's dtype."""
    rng = np.random.default_rng(seed)
    w: dict[str, np.ndarray] = {}
    width = spec.in_features
    for op in spec.ops:
        if op[0] == "dense":
            w["dense.kernel"] = rng.uniform(-1, 1, (op[1], width)) / np.sqrt(width)
            w["dense.bias"] = rng.uniform(-0.2, 0.2, op[1]) + bias_shift
            width = op[1]
    c = spec.features
    w.update({"bn.scale": rng.uniform(0.5, 1.5, c), "bn.offset": rng.uniform(-0.5, 0.5, c),
              "bn.mean": rng.uniform(-0.5, 0.5, c), "bn.var": rng.uniform(0.5, 2.0, c)})
    return {k: data.representable(v, spec.dtype) for k, v in w.items()}


def inputs(n: int, features: int, dtype: str, seed: int = 0, mean_scale: float = 1.0) -> np.ndarray:
    """(n, features), feature j with mean in [-1, 1] * mean_scale and std in [0.5, 2]."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-1, 1, features) * mean_scale
    stds = rng.uniform(0.5, 2.0, features)
    return data.representable(rng.standard_normal((n, features)) * stds + means, dtype)


def layer_input(outs, x, i) -> np.ndarray:
    return np.asarray(x, np.float64) if i == 0 else outs[i - 1]


def dropout_masks(spec: blocks.BlockSpec, outs, x) -> list[np.ndarray]:
    """The keep-mask of each Dropout layer: a value is dropped where the output is 0 and its input is not."""
    return [~((outs[i] == 0) & (layer_input(outs, x, i) != 0))
            for i, op in enumerate(spec.ops) if op[0] == "dropout"]


def check_layers(case, rec, spec: blocks.BlockSpec, w, x, outs, training: bool, extra: dict) -> None:
    """Every layer's output equals the oracle on the framework's own input to that layer."""
    __tracebackhide__ = True
    variance = case.decl.variance_algorithm.value
    masks = dropout_masks(spec, outs, x) if training else []
    for i, op in enumerate(spec.ops):
        h = layer_input(outs, x, i)
        want = bref.forward((op,), w, h, training=training, rate=spec.rate, eps=spec.eps,
                            masks=masks[:1] if op[0] == "dropout" else None)[0]
        if op[0] == "dropout" and training:
            masks = masks[1:]
        if op[0] == "dense":
            tol = tl.dense_output(h, w["dense.kernel"], w["dense.bias"], spec.dtype)
        elif op[0] == "bn":
            tol = tl.bn_output(h, -1, want, w["bn.scale"], spec.eps, io_dtype=spec.dtype,
                               normalize_var=None if training else w["bn.var"],
                               variance="two-pass" if variance == "two-pass" else "one-pass")
        elif op[0] in ("relu",) or (op[0] == "dropout" and not training):
            tol = tl.exact(op[0] if op[0] == "relu" else "inference-mode Dropout (the identity)")
        elif op[0] == "softmax":
            tol = tl.softmax_output(h.shape[op[1]], spec.dtype)
        else:
            tol = tl.elementwise(spec.dtype, 4, op[0])
        fields = {**extra, "layer": i, "op": op[0]}
        if training:
            ch.close(rec, "block_layer_output_train", outs[i], want, tol,
                     declared=f"oracle {op[0]} on the layer's input", extra=fields)
        else:
            ch.close(rec, "block_layer_output_inference", outs[i], want, tol,
                     declared=f"oracle {op[0]} on the layer's input", extra=fields)


_PATHS: dict[tuple, str] = {}


def bn_estimator(case, features: int, n: int) -> str:
    """The running-variance estimator the adapter declares for a rank-2 BatchNorm of this shape (the code path is
    asked once per adapter and shape)."""
    key = (case.adapter, case.device, case.dtype, features, n)
    if key not in _PATHS:
        try:
            _PATHS[key] = case.adapter(case.spec(rank=2, num_features=features)).code_path((n, features))
        except Unsupported:
            _PATHS[key] = "default"
    return case.decl.estimator_for(_PATHS[key])


def check_running_stats(case, rec, spec: blocks.BlockSpec, w, bn_in, after, extra: dict) -> None:
    """The BatchNorm's running statistics after one training forward equal the oracle update with the declared
    estimator, on the framework's own BatchNorm input."""
    __tracebackhide__ = True
    est = bn_estimator(case, spec.features, bn_in.shape[0])
    mean, var = bref.running_after_train(w, bn_in, spec.momentum, est)
    tol = tl.running_stats([bn_in], -1, stats_dtype=spec.dtype, steps=1,
                           state_scale=float(max(np.max(np.abs(w["bn.mean"])), np.max(w["bn.var"]))))
    ch.close(rec, "block_running_mean", after["bn.mean"], mean, tol, declared="oracle update", extra=extra)
    ch.close(rec, "block_running_var", after["bn.var"], var, tol, declared=f"oracle update ({est} variance)",
             extra=extra)
