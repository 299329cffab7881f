"""Mixed precision in PaddlePaddle: the float32 layer fed 16-bit activations, plainly or inside paddle.amp.auto_cast
(O1), which does not cast batch_norm's input back to float32 on the CPU."""

from __future__ import annotations

import contextlib

import numpy as np

from bnsuite.adapters.base import MixedRun, State
from bnsuite.adapters.mixed_precision.own_layer import float32_layer, train_then_infer

# The idiom kinds the runner implements ("<kind>-<dtype>"); paddle_bn's declaration names the same ones.
KINDS = ("defaults", "autocast")


def _dt(t) -> str:
    """A paddle tensor's dtype as NumPy spells it (str() gives "paddle.float32")."""
    return str(t.dtype).replace("paddle.", "")


def step(cls, idiom: str, spec, state: State, x: np.ndarray) -> MixedRun:
    """The float32 paddle layer (the adapter's own build) fed `x` in the idiom's low dtype."""
    kind, low, bn = float32_layer(cls, idiom, spec, state, KINDS, "paddle")
    paddle = bn.paddle
    built = bn.state_dtypes()
    xt = paddle.to_tensor(np.ascontiguousarray(x)).astype(low)
    ctx = (lambda: paddle.amp.auto_cast(level="O1", dtype=low)) if kind == "autocast" else contextlib.nullcontext
    with paddle.no_grad():
        y, after, st, yi = train_then_infer(bn, bn.bn, xt, ctx)
    snippet = (f"{bn.snippet()}\nx = x.astype('{low}')  # activations\n"
               + (f"with paddle.amp.auto_cast(level='O1', dtype='{low}'):\n    y = bn(x)" if kind == "autocast"
                  else "y = bn(x)"))
    return MixedRun(bn._np(y), _dt(y), bn._np(yi), st, built, after, "default", snippet)
