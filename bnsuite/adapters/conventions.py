"""Spec -> constructor arguments for the frameworks whose momentum weights the OLD running value, the state loop
every adapter family shares, and the freeze idioms of the module-mode frameworks.

Keras 3, tf_keras, ``tf.compat.v1.layers`` and Flax all take ``momentum`` as the weight of the old running value, an
``epsilon``, an ``axis`` and two switches for the affine parameters; only the switches' names differ. One function
converts a Spec for all of them, so the conversion (``1 - momentum``, the refusal of the cumulative average) has one
home.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import numpy as np

from bnsuite.adapters.base import Cited, FreezeFacts, FreezeIdiom, Spec, State, Unsupported

# The names of the two affine switches: offset first, scale second.
KERAS_AFFINE = ("center", "scale")
FLAX_AFFINE = ("use_bias", "use_scale")

# The four pieces of State, in its field order.
SLOTS = ("scale", "offset", "mean", "var")


def old_weight_kwargs(spec: Spec, framework: str, affine_names: tuple[str, str] = KERAS_AFFINE) -> dict[str, Any]:
    """Constructor arguments for `spec` in a framework whose momentum weights the old value.

    With ``spec.use_defaults`` only the channel axis is passed (and only when it is not the frameworks' default -1).
    Raises Unsupported for the cumulative moving average (momentum=None), which none of these frameworks has.
    """
    if spec.momentum is None and not spec.use_defaults:
        raise Unsupported(f"{framework} has no cumulative moving average (momentum=None); declared")
    if spec.use_defaults:
        return {} if spec.channels_last else {"axis": 1}
    offset, scale = affine_names
    return {"axis": spec.channel_axis, "epsilon": spec.eps, "momentum": 1.0 - spec.momentum,
            offset: spec.affine, scale: spec.affine}


def refuse_untracked(spec: Spec, framework: str) -> None:
    """Frameworks that always keep moving statistics cannot build a layer without them."""
    if not spec.track_running_stats:
        raise Unsupported(f"{framework} has no option to skip the moving statistics; declared batch_stats_inference")


def build_shape(spec: Spec, fill: Any = None) -> list:
    """An input shape for building the layer: `fill` everywhere except the channel axis."""
    shape = [fill] * spec.rank
    shape[spec.channel_axis] = spec.num_features
    return shape


def is_channels_last(axis: Any, rank: int) -> bool:
    """A layer's `axis` (an int, or a one-element list as tf_keras stores it) names the last dimension."""
    axis = axis[0] if isinstance(axis, (list, tuple)) else axis
    return axis in (-1, rank - 1)


def kwargs_text(kwargs: dict[str, Any]) -> str:
    """Constructor arguments as source text for snippets: "axis=1, epsilon=0.001, ..."."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in kwargs.items())


class SlotState:
    """get_state / set_state / state_dtypes as one loop over the four slots (scale, offset, mean, var).

    A family names where each slot lives (``_slot``: a handle, or None where the layer has none) and how to read,
    write and type one handle; the loops are the same for every framework.
    """

    def _slot(self, name: str) -> Any:
        raise NotImplementedError

    def _read(self, handle: Any) -> Any:
        raise NotImplementedError

    def _write(self, handle: Any, value: np.ndarray) -> None:
        raise NotImplementedError

    def _dtype(self, handle: Any) -> str:
        raise NotImplementedError

    def get_state(self) -> State:
        handles = [self._slot(n) for n in SLOTS]
        return State(*(None if h is None else np.asarray(self._read(h), np.float64).copy() for h in handles))

    def set_state(self, state: State) -> None:
        for name in SLOTS:
            handle, value = self._slot(name), getattr(state, name)
            if handle is not None and value is not None:
                self._write(handle, np.asarray(value))

    def state_dtypes(self) -> dict[str, str | None]:
        return {n: (None if (h := self._slot(n)) is None else self._dtype(h)) for n in SLOTS}

    @contextlib.contextmanager
    def running_stats_kept(self, keep: bool = True):
        """Undo on exit what the block did to the running statistics (where `keep`): for a framework that updates
        them in a call whose contract leaves them alone (inference with batch statistics, a backward pass)."""
        saved = self.get_state() if keep else None
        try:
            yield
        finally:
            if saved is not None:
                self.set_state(State(None, None, saved.mean, saved.var))

    def rebuild_keeping_state(self, **extra: Any) -> None:
        """Replace the layer `self.bn` by `self._build(**extra)` (a build argument of a freeze idiom), state loaded."""
        state = self.get_state()
        self.bn = self._build(**extra)
        self.set_state(state)


# The freeze idioms of a module-mode framework (torch, paddle): the module's train()/eval() mode alone decides which
# statistics normalize and whether the running ones update (the kernel updates them in training whatever the grad
# mode); freezing the parameters or running the step under no_grad only takes the gradients away. Role -> (the
# recipe switches the idiom sets, what it does); "frozen" stands for the framework's frozen-parameter idiom and switch.
MODULE_MODE = {
    "frozen": (("frozen",), FreezeFacts("batch", True, False)),
    "eval": (("eval_mode",), FreezeFacts("running", False, True)),
    "no_grad": (("no_grad",), FreezeFacts("batch", True, False)),
    "eval_frozen": (("eval_mode", "frozen"), FreezeFacts("running", False, False)),
}


def module_mode_idioms(recipe: Callable[..., Any], frozen_idiom: str, frozen_switch: str) -> dict[str, FreezeIdiom]:
    """The MODULE_MODE idioms as the framework runs them: `recipe` takes the switches as keywords, `frozen_idiom` names
    the frozen-parameter idiom ("requires_grad_false", which also names "eval_requires_grad_false") and
    `frozen_switch` the recipe's switch for it."""
    switch = lambda s: frozen_switch if s == "frozen" else s
    return {role.replace("frozen", frozen_idiom): FreezeIdiom(recipe(**{switch(s): True for s in switches}))
            for role, (switches, _) in MODULE_MODE.items()}


def module_mode_freeze(frozen_idiom: str, /, **sources: str) -> dict[str, Cited[FreezeFacts]]:
    """The declared facts of the MODULE_MODE idioms, named as module_mode_idioms names them (`frozen_idiom` for the
    frozen-parameter one), each resting on the framework's source given under its role (frozen=, eval=, no_grad=,
    eval_frozen=)."""
    if set(sources) != set(MODULE_MODE):
        raise TypeError(f"module_mode_freeze wants a source for each of {', '.join(MODULE_MODE)}")
    return {role.replace("frozen", frozen_idiom): Cited(facts, sources[role])
            for role, (_, facts) in MODULE_MODE.items()}
