"""The compiled and transformed lane: the layer run through a framework's compilers and function transforms.

A framework's lane (``CompileLane``) lists named paths (``torch.compile`` with one backend and options,
``torch.export``, ``functional_call``, ``vmap``, ...). Each path runs the SAME cases as the eager adapter, in one
``run``: k training steps from a loaded state (the output and state after each step; the gradients of
sum(y * dy) from the first step), then a switch to inference mode after the first compiled call (the output), and the
number of steps the framework counted (torch's ``num_batches_tracked``). ``freeze`` runs one freeze idiom of the
adapter's declaration through the path.

What each path does is declared (``PathFacts``, every value cited); suites/test_compiled.py checks the run against
the declaration, the adapter run eagerly and the oracle. Framework imports happen inside the methods.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from typing import ClassVar, Mapping

import numpy as np

from bnsuite.adapters.base import Cited, Grads, Spec, State


@dataclasses.dataclass(frozen=True)
class PathFacts:
    """What one compiled or transformed path does with BatchNorm.

    `train_normalizes`: what a training-mode call normalizes with, "batch" or "running" (a mode baked in at export),
    or "not observable" (a path that returns no output, a fit step: only its state is checked).
    `running_stats`: after the training-mode calls, "updated" (the layer's own statistics move in sequence, as
    eagerly), "per-step" (a scanned path whose every step updates its own copy of the loaded statistics),
    "first-<n>" (only the first n calls move them, in sequence: a jit whose replays leave out the update), "passed"
    (the statistics passed into the call move, the layer's own do not), "dropped" (nothing moves) or
    "error:<Exception>" (the path refuses a training-mode call).
    `eval_switch`: inference mode asked for after the first call: "running" (normalizes with the running statistics,
    as eagerly), "batch" (keeps batch statistics), "train-baked" (keeps training mode), or "error:<Exception>".
    `grads`: "yes" (gradients of sum(y * dy) through the batch statistics), "error:<Exception>" or "not observable".
    `agreement`: how close to eager: "bitwise" (the same kernels) or "rounding" (another float32 evaluation order).
    `cumulative`: momentum=None through the path (the cumulative average and the step counter): "yes",
    "error:<Exception>" (the path refuses it) or "n/a" (the path has no training-mode update to check).
    `freeze`: the adapter's freeze idioms this path runs (their facts are the adapter's own declaration).
    `facts`: further observed facts, name -> value as a short string (the batch-norm op a graph holds, ...).
    """

    how: str
    train_normalizes: str = "batch"
    running_stats: str = "updated"
    eval_switch: str = "running"
    grads: str = "yes"
    agreement: str = "rounding"
    cumulative: str = "yes"
    freeze: tuple[str, ...] = ()
    facts: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PathRun:
    """What one path gave (float64 NumPy). A refused part is an "error:<Exception>" string in `errors`."""

    train_outputs: list[np.ndarray]
    states: list[State]  # the state after each training step, where the path keeps it
    own_state: State | None = None  # the layer's own state after the training steps
    eval_output: np.ndarray | None = None
    grads: Grads | None = None
    steps_tracked: int | None = None  # the framework's step counter after the steps (None: it keeps none)
    facts: dict[str, str] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)  # "train" / "eval" / "grads" -> "error:<Exc>"
    seconds: float = 0.0  # wall time of the run, compilation included


def error_name(e: BaseException) -> str:
    return f"error:{type(e).__name__}"


class CompileLane(ABC):
    """One framework's compiled and transformed paths. Subclasses declare them and run them."""

    framework: ClassVar[str]

    @classmethod
    @abstractmethod
    def declare(cls) -> Mapping[str, Cited[PathFacts]]:
        """Path name -> what it does, cited. The order is the report's."""

    @classmethod
    def unavailable_reason(cls, path: str) -> str | None:
        """None where `path` can run on this machine, else why not (a missing C++ compiler, ...): its cases skip."""
        return None

    def __init__(self, adapter_cls):
        self.adapter_cls = adapter_cls

    def _layer(self, spec: Spec, state: State):
        """A fresh adapter layer for `spec` with `state` loaded."""
        bn = self.adapter_cls(spec)
        bn.set_state(state)
        return bn

    @staticmethod
    def _run_steps(bn, step, infer, state, batches: list[np.ndarray], grads: bool, start: float) -> PathRun:
        """step(x, want_grads) -> (y or None, Grads or None) on each batch (gradients from the first where `grads`)
        with state() after each, up to the first step the path refuses; then infer(x) on the last batch. `start`:
        the run's perf_counter() start, compilation included."""
        out = PathRun(train_outputs=[], states=[])
        for i, x in enumerate(batches):
            try:
                y, g = step(x, grads and i == 0)
            except Exception as e:  # the path refuses a training call
                out.errors["train"] = error_name(e)
                break
            if y is not None:
                out.train_outputs.append(np.asarray(y, np.float64))
            out.states.append(state())
            out.grads = out.grads or g
        out.own_state = bn.get_state()
        try:
            out.eval_output = np.asarray(infer(batches[-1]), np.float64)
        except Exception as e:
            out.errors["eval"] = error_name(e)
        out.seconds = time.perf_counter() - start
        return out

    @abstractmethod
    def run(self, path: str, spec: Spec, state: State, batches: list[np.ndarray], dy: np.ndarray,
            grads: bool = True) -> PathRun:
        """A fresh layer for `spec` with `state` loaded, run through `path`: one training step per batch (gradients
        of sum(y * dy) from the first where `grads`), then an inference-mode call on the last batch."""

    def freeze(self, path: str, idiom: str, spec: Spec, state: State, x: np.ndarray, dy: np.ndarray,
               lr: float) -> tuple[np.ndarray, State]:
        """A fresh layer with `state`, frozen with `idiom` (the adapter's freeze idiom) and run through `path`: one
        forward and one SGD step on sum(y * dy). Returns the output and the state afterwards."""
        raise NotImplementedError(f"{type(self).__name__}: no freeze idioms under {path}")
