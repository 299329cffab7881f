"""Mixed precision in MindSpore: the float32 layer (built with defaults) fed 16-bit activations.

mindspore.amp.auto_mixed_precision is not an idiom here: at "O2" (the level that keeps BatchNorm in float32) the
BatchNorm's output is cast back to the low dtype and the network's output up to float32, so a float32-typed output
carries float16 rounding, which MixedRule's one output dtype cannot state; at "O1" and "O3" the BatchNorm primitive
gets the low dtype itself (bfloat16: TypeError, as below)."""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, MixedRule, MixedRun, State
from bnsuite.adapters.mixed_precision.own_layer import float32_layer

# The idiom kinds the runner implements ("<kind>-<dtype>"); declared() names the same ones.
KINDS = ("defaults",)

_PRIM = ("mindspore/ops/operations/manually_defined/ops_def.py: BatchNorm: 'input_x ... with float16 or float32 data "
         "type'")


def declared() -> dict:
    """idiom -> Cited[MixedRule]: the float32 layer fed float16 or bfloat16 activations."""
    return {
        "defaults-float16": Cited(MixedRule("yes", output="float16", stats="float32", params="float32",
                                            state="float32"),
                                  f"{_PRIM}; a float16 input with float32 gamma/beta/moving statistics runs: the "
                                  "output takes the input's float16, the statistics are computed and stored in float32 "
                                  "(observed: a per-channel variance near 1e6 stays finite, mindspore 2.10.0)"),
        "defaults-bfloat16": Cited(MixedRule("error:TypeError"),
                                   f"{_PRIM}: 'the input argument[input_x] must be a type of {{Tensor[Float16], "
                                   "Tensor[Float32]}, but got Tensor[BFloat16]'"),
    }


def step(cls, idiom: str, spec, state: State, x: np.ndarray) -> MixedRun:
    """The float32 mindspore layer (the adapter's own build) fed `x` in the idiom's low dtype."""
    _, low, bn = float32_layer(cls, idiom, spec, state, KINDS, "mindspore")
    ms = bn.ms
    built = bn.state_dtypes()
    xt = bn._in(x).astype(getattr(ms, low))  # through float32, which holds every 16-bit value exactly
    bn.bn.set_train(True)
    y = bn.bn(xt)
    after, st = bn.state_dtypes(), bn.get_state()
    bn.bn.set_train(False)
    yi = bn.bn(xt)
    snippet = f"{bn.snippet()}\n# x: {low} activations, e.g. mindspore.Tensor(x).astype(mindspore.{low})"
    return MixedRun(bn._out(y), str(y.dtype).lower(), bn._out(yi), st, built, after, "default", snippet)
