"""The runs the compiled lane's tests read: each declared path run once per process (a compiled path is built once,
not once per test), and the same adapter run eagerly on the same seeded state and batches.

Rows of `TIMINGS` (path, seconds, compilation included) feed the terminal summary of suites/test_compiled.py.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from bnsuite.adapters.base import Grads, Spec, State
from bnsuite.suites import data

STEPS = 5  # training steps per run; the checks read the state after 1 and after STEPS
LR = 0.1  # the SGD step of the freeze idioms

_RUNS: dict[tuple, object] = {}
TIMINGS: list[dict] = []


def spec_for(case, momentum: float | None = 0.1) -> Spec:
    """The lane's one layer: rank 4, channels first (NCHW), the suite's usual eps."""
    return case.spec(rank=4, channels_last=False, momentum=momentum)


@dataclasses.dataclass
class Inputs:
    spec: Spec
    state: State
    batches: list[np.ndarray]
    dy: np.ndarray


def inputs(case, momentum: float | None = 0.1) -> Inputs:
    spec = spec_for(case, momentum)
    xs = data.batches(spec, STEPS)
    return Inputs(spec, data.state(spec), xs, data.representable(data.cotangent(xs[0]), spec.dtype))


@dataclasses.dataclass
class EagerRun:
    train_outputs: list[np.ndarray]
    states: list[State]
    eval_output: np.ndarray  # inference on the last batch after the steps
    eval_at_start: list[np.ndarray]  # inference on each batch with the loaded state (a mode baked in at export)
    grads: Grads  # training-mode backward on the first batch from the loaded state
    inference_grads: Grads  # inference-mode backward on the first batch with the loaded state
    code_path: str = "default"  # the adapter's code path for these batches (which running-variance estimator)


def eager(case, inp: Inputs) -> EagerRun:
    key = ("eager", case.adapter.id, inp.spec)
    if key not in _RUNS:
        bn = case.adapter(inp.spec)
        bn.set_state(inp.state)
        grads = bn.backward(inp.batches[0], inp.dy, training=True)
        inference_grads = bn.backward(inp.batches[0], inp.dy, training=False)
        at_start = [bn.forward(x, training=False) for x in inp.batches]
        outs, states = [], []
        for x in inp.batches:
            outs.append(bn.forward(x, training=True))
            states.append(bn.get_state())
        _RUNS[key] = EagerRun(outs, states, bn.forward(inp.batches[-1], training=False), at_start, grads,
                               inference_grads, bn.code_path(inp.batches[0].shape))
    return _RUNS[key]


@dataclasses.dataclass
class PerStepRun:
    states: list[State]  # the state after ONE training step on batch i from the loaded state
    eval_output: np.ndarray  # inference on the last batch after its one step


def eager_per_step(case, inp: Inputs) -> PerStepRun:
    """The eager counterpart of a path whose steps each update their own copy of the loaded statistics."""
    key = ("eager-per-step", case.adapter.id, inp.spec)
    if key not in _RUNS:
        states, bn = [], None
        for x in inp.batches:
            bn = case.adapter(inp.spec)
            bn.set_state(inp.state)
            bn.forward(x, training=True)
            states.append(bn.get_state())
        _RUNS[key] = PerStepRun(states, bn.forward(inp.batches[-1], training=False))
    return _RUNS[key]


def first_n(running_stats: str) -> int:
    """n of a declared "first-<n>": only the first n training calls move the running statistics."""
    return int(running_stats.removeprefix("first-"))


def eager_eval_after(case, inp: Inputs, n: int) -> np.ndarray:
    """Eager inference on the last batch after the first n training steps from the loaded state."""
    key = ("eager-eval-after", case.adapter.id, inp.spec, n)
    if key not in _RUNS:
        bn = case.adapter(inp.spec)
        bn.set_state(inp.state)
        for x in inp.batches[:n]:
            bn.forward(x, training=True)
        _RUNS[key] = bn.forward(inp.batches[-1], training=False)
    return _RUNS[key]


def path_run(lane, case, path: str, inp: Inputs, grads: bool = True):
    key = ("path", case.adapter.id, type(lane).__qualname__, path, inp.spec, grads)
    if key not in _RUNS:
        start = time.perf_counter()
        _RUNS[key] = lane.run(path, inp.spec, inp.state, inp.batches, inp.dy, grads=grads)
        TIMINGS.append({"adapter": case.adapter.id, "path": path,
                        "what": "momentum=None" if inp.spec.momentum is None else "steps",
                        "seconds": time.perf_counter() - start})
    return _RUNS[key]


def frozen(lane, case, path: str, idiom: str, inp: Inputs):
    """(path output, path state) and (eager output, eager state) of one SGD step under a freeze idiom."""
    key = ("freeze", case.adapter.id, type(lane).__qualname__, path, idiom, inp.spec)
    if key not in _RUNS:
        x = inp.batches[0]
        start = time.perf_counter()
        got = lane.freeze(path, idiom, inp.spec, inp.state, x, inp.dy, LR)
        TIMINGS.append({"adapter": case.adapter.id, "path": path, "what": f"freeze {idiom}",
                        "seconds": time.perf_counter() - start})
        bn = case.adapter(inp.spec)
        bn.set_state(inp.state)
        y = bn.frozen_step(idiom, x, inp.dy, LR)
        _RUNS[key] = (got, (y, bn.get_state()))
    return _RUNS[key]
