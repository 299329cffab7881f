"""Mixed precision through a BatchNorm adapter's own float32 layer: its build and its two measured calls."""

from __future__ import annotations

from typing import Any, Callable

from bnsuite.adapters.base import State, Unsupported
from bnsuite.adapters.mixed_precision import parse


def float32_layer(cls, idiom: str, spec, state: State, kinds: tuple[str, ...], framework: str):
    """(kind, low dtype, the adapter `cls` built for `spec` in float32 with `state` loaded) for "<kind>-<dtype>".

    Raises Unsupported for a kind outside `kinds`, the ones the framework's runner implements.
    """
    kind, low = parse(idiom)
    if kind not in kinds:
        raise Unsupported(f"{framework} has no {kind!r} idiom")
    bn = cls(spec.replace(dtype="float32"))
    bn.set_state(state)
    return kind, low, bn


def train_then_infer(bn, layer, xt, ctx: Callable[[], Any]):
    """One training-mode call of `layer` then one inference-mode call, each inside `ctx()`.

    Returns (training output, the adapter's state dtypes and state after the training call, inference output).
    """
    layer.train()
    with ctx():
        y = layer(xt)
    after, state = bn.state_dtypes(), bn.get_state()
    layer.eval()
    with ctx():
        yi = layer(xt)
    return y, after, state, yi
