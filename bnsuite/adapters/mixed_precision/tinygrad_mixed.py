"""Mixed precision in tinygrad: the float32 layer (built with defaults) fed 16-bit activations. tinygrad has no
autocast or dtype policy; the declared facts live in tinygrad_bn's declaration."""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import MixedRun, State
from bnsuite.adapters.dtypes import np_dtype
from bnsuite.adapters.mixed_precision.own_layer import float32_layer
from bnsuite.adapters.tinygrad_bn import dtype_name, training_mode

# The idiom kinds the runner implements ("<kind>-<dtype>"); tinygrad_bn's declaration names the same ones.
KINDS = ("defaults",)


def step(cls, idiom: str, spec, state: State, x: np.ndarray) -> MixedRun:
    """The float32 tinygrad layer (the adapter's own build) fed `x` in the idiom's low dtype."""
    kind, low, bn = float32_layer(cls, idiom, spec, state, KINDS, "tinygrad")
    built = bn.state_dtypes()
    xt = bn._in(x).cast(getattr(bn.dtypes, low))  # float32 on the case's device, then the idiom's dtype
    with training_mode(True):
        y = bn.bn(xt)
        out, out_dtype = bn._out(y), np.dtype(np_dtype(dtype_name(y.dtype))).name
    after, st = bn.state_dtypes(), bn.get_state()
    with training_mode(False):
        yi = bn._out(bn.bn(xt))
    snippet = f"{bn.snippet()}\n# x: {low} activations, e.g. x = x.cast(dtypes.{'half' if low == 'float16' else low})"
    return MixedRun(out, out_dtype, yi, st, built, after, "default", snippet)
