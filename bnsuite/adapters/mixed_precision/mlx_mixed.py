"""Mixed precision in MLX: the float32 layer (built with defaults) fed 16-bit activations. MLX has no autocast or
dtype policy (mlx.nn has no such switch; Module.set_dtype casts the whole layer, the precision suite's case)."""

from __future__ import annotations

import contextlib

import numpy as np

from bnsuite.adapters.base import Cited, MixedRule, MixedRun, State
from bnsuite.adapters.mixed_precision import LOW
from bnsuite.adapters.mixed_precision.own_layer import float32_layer, train_then_infer

# The idiom kinds the runner implements ("<kind>-<dtype>"); declared() names the same ones.
KINDS = ("defaults",)

_SRC = ("mlx/nn/layers/normalization.py: BatchNorm._calc_stats: mx.mean(x) and mx.var(x) return the input's dtype "
        "(mlx/core/__init__.pyi: mean/var keep the array's floating dtype), so the batch statistics are 16-bit; "
        "BatchNorm.__call__: running_mean = (1 - mu) * running_mean + mu * mean promotes to the float32 state "
        "(MLX's type promotion: float16 with float32 gives float32); self.weight * x + self.bias promotes the "
        "output to the float32 weight (observed with mlx 0.32.4)")


def declared() -> dict:
    """idiom -> Cited[MixedRule]: the float32 layer fed float16 or bfloat16 activations."""
    rules = {}
    for low in LOW:
        # float16's largest finite value is 65504: a batch variance beyond it is inf in the input's dtype
        finite = low != "float16"
        why = ("; mx.mean is the float16 sum times 1/n (mlx/core ops.cpp mean): a channel whose sum exceeds 65504 "
               "has an inf mean though the mean itself is representable, and mx.var of float16 activations whose "
               "variance exceeds 65504 is inf: the running statistics become non-finite and the output NaN or the "
               "offset (finding mlx_float16_mean_sum_overflow)"
               if not finite else "; bfloat16 has float32's exponent range, the sum, mean and variance stay finite")
        rules[f"defaults-{low}"] = Cited(MixedRule("yes", output="float32", stats=low, params="float32",
                                                   state="float32", running_var_finite=finite,
                                                   mean_sum_overflows=not finite), _SRC + why)
    return rules


def step(cls, idiom: str, spec, state: State, x: np.ndarray) -> MixedRun:
    """The float32 MLX layer (the adapter's own build) fed `x` in the idiom's low dtype (mlx_bn reads declared() from
    here, so this module leaves mlx_bn's helpers alone: str(mlx.core.float16) is "mlx.core.float16")."""
    kind, low, bn = float32_layer(cls, idiom, spec, state, KINDS, "mlx")
    built = bn.state_dtypes()
    xt = bn._array(np.moveaxis(x, 1, -1) if bn.transpose else x, getattr(bn.mx, low))
    y, after, st, yi = train_then_infer(bn, bn.module, xt, contextlib.nullcontext)
    bn.mx.eval(y, yi)
    snippet = f"{bn.snippet()}\n# x: {low} activations, e.g. x = x.astype(mx.{low})"
    return MixedRun(bn._out(y), str(y.dtype).rpartition(".")[2], bn._out(yi), st, built, after, "default", snippet)
