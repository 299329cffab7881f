"""Mixed precision in torch: the float32 layer fed low-precision activations, with and without torch.autocast."""

from __future__ import annotations

import contextlib

import numpy as np

from bnsuite.adapters.base import MixedRun, State, dtype_name
from bnsuite.adapters.mixed_precision import both, rule
from bnsuite.adapters.mixed_precision.own_layer import float32_layer, train_then_infer

_TORCH_MIXED = ("aten/src/ATen/native/Normalization.cpp: batch_norm_cpu checks is_mixed_type(input, weight, bias, "
                "running_mean, running_var) and dispatches the mixed kernels of aten/src/ATen/native/cpu/"
                "batch_norm_kernel.cpp (batch_norm_cpu_collect_stats_*_impl<BFloat16/Half, float>: statistics in "
                "opmath float, running statistics and parameters stay float, output in the input dtype)")
_TORCH_AUTOCAST = ("aten/src/ATen/autocast_mode.cpp: TORCH_LIBRARY_IMPL(aten, AutocastCPU, m) lists batch_norm under "
                   "neither the lower_precision_fp nor the fp32 cast policy, and TORCH_LIBRARY_IMPL(_, AutocastCPU, m) "
                   "makes every unlisted op a fallthrough: autocast leaves the call alone and the mixed kernel runs "
                   "on the input's dtype (intel-extension-for-pytorch registers batch_norm as fp32 and would change "
                   "this)")

# The idiom kinds the runners here implement ("<kind>-<dtype>"); the declarations name the same ones.
KINDS = ("defaults", "autocast")


def declared() -> dict:
    """idiom -> Cited[MixedRule] (observed with torch 2.13, explained by the cited source)."""
    return both(lambda low: {
        "defaults": rule(low, "float32", _TORCH_MIXED),
        "autocast": rule(low, "float32", f"{_TORCH_AUTOCAST}; {_TORCH_MIXED}"),
    })


def step(cls, idiom: str, spec, state: State, x: np.ndarray, prepare=None) -> MixedRun:
    """The float32 torch layer (the adapter's own build) fed `x` in the idiom's dtype; `prepare(module, dtype)` runs
    after the state is loaded (a hook for wrappers)."""
    kind, low, bn = float32_layer(cls, idiom, spec, state, KINDS, "torch")
    torch = bn.torch
    low_dt = getattr(torch, low)
    if prepare is not None:
        prepare(bn.module, low_dt)
    xt = bn._to_torch(x).to(low_dt)  # .to keeps the channels-last strides
    ctx = (lambda: torch.autocast("cpu", dtype=low_dt)) if kind == "autocast" else contextlib.nullcontext
    built = bn.state_dtypes()
    with torch.no_grad():
        y, after, st, yi = train_then_infer(bn, bn.module, xt, ctx)
    snippet = (f"{bn.snippet().replace(', dtype=torch.float32', '')}\nx = x.to(torch.{low})  # activations\n"
               + (f"with torch.autocast('cpu', dtype=torch.{low}):\n    y = bn(x)" if kind == "autocast"
                  else "y = bn(x)"))
    return MixedRun(bn._from_torch(y), dtype_name(y.dtype), bn._from_torch(yi), st, built, after,
                    bn.code_path(x.shape), snippet)
