"""Training loops around BatchNorm: gradient accumulation and weight averaging, as each framework's users run them.

Framework-neutral: the rules a framework declares, the runs its loop module returns, and the interface
``TrainingLoops`` that each framework's module (torch_loops, keras_loops, flax_loops) implements with the framework's
real machinery. No framework is imported here; the float64 oracle of these loops is ``reference`` beside this file.

The loss of every loop is the same: a micro-batch (or batch) of m samples with upstream gradient dy contributes
``L = sum(y * dy) / m`` (the mean over samples of the per-sample sum), optimized by plain SGD with learning rate lr.

* Gradient accumulation: k micro-batches of m samples, each forward in training mode, their gradients averaged
  (torch: each micro-batch's loss scaled by 1/k before backward; Keras 3: ``SGD(gradient_accumulation_steps=k)`` in
  fit), then ONE optimizer step; against it, one step on the concatenated batch of k*m samples from the same state.
* Weight averaging: T training steps, the averaging tool updated after each; what the averaged model holds at the end
  for scale/offset (trainable) and for the running statistics (not trainable), which frameworks treat differently.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Mapping

from bnsuite.adapters.base import Cited, State

# What an averaged model's running statistics can be (the oracle computes each; the suite names the one observed):
# "averaged": averaged like the parameters, over the T snapshots taken after each step;
# "live": the training model's running statistics after the last step (copied, or never averaged);
# "initial": the running statistics the averaged copy was made with (stale: never updated);
# "recomputed": reset and re-estimated over the training batches as a cumulative average (torch update_bn).
RUNNING_STATS_CANDIDATES = ("averaged", "live", "initial", "recomputed")
# How the parameters are averaged: "equal" (the plain mean of the T snapshots, SWA), "ema-first-copy" (EMA whose first
# value is the first snapshot: a_1 = w_1, a_t = d a_{t-1} + (1 - d) w_t; Keras use_ema), "ema-debiased" (e_0 = 0,
# e_t = d e_{t-1} + (1 - d) w_t, reported as e_t / (1 - d^t); optax.ema(debias=True)), "ema-from-initial" (EMA from
# the weights before the first step: a_0 = w_0, a_t = d a_{t-1} + (1 - d) w_t; tf_keras use_ema).
AVERAGING_KINDS = ("equal", "ema-first-copy", "ema-debiased", "ema-from-initial")


@dataclasses.dataclass(frozen=True)
class AccumulationRule:
    """What one gradient-accumulation idiom does. `statistics_updates`: "every-micro-batch" (k momentum updates with
    each micro-batch's own statistics) or "once" (one update per accumulated step); `gradient`: "mean-of-micro-batches"
    (the mean of the k micro-batch gradients, each through its own batch statistics)."""

    statistics_updates: str
    gradient: str = "mean-of-micro-batches"


@dataclasses.dataclass(frozen=True)
class AveragingRule:
    """What one weight-averaging idiom leaves in the averaged model: `params` how scale/offset are averaged (a key of
    AVERAGING_KINDS), `running_stats` what the running statistics are (a key of RUNNING_STATS_CANDIDATES), `decay` the
    EMA decay where params is an EMA."""

    params: str
    running_stats: str
    decay: float | None = None


@dataclasses.dataclass
class AccumulationRun:
    """The state after one accumulated step over k micro-batches, and after one step on their concatenation."""

    accumulated: State
    large_batch: State
    snippet: str = ""


@dataclasses.dataclass
class AveragingRun:
    """The averaged model's state after T steps, and the training model's (live) state where the tool leaves it
    (None where the tool overwrites the model with the average, as Keras's finalize_variable_values does)."""

    averaged: State
    live: State | None
    snippet: str = ""


class TrainingLoops:
    """One framework's training loops around its BatchNorm, named as an adapter's ``training_loops`` capability.

    A subclass declares its idioms (name -> Cited rule) and runs them with the framework's real machinery, starting
    from the adapter's own layer (built from the Spec, loaded with the State) so the conversions are the adapter's.
    An idiom a framework lacks is simply not declared; a declared one that cannot run fails its case.
    """

    accumulation: ClassVar[Mapping[str, Cited[AccumulationRule]]] = {}
    averaging: ClassVar[Mapping[str, Cited[AveragingRule]]] = {}

    @classmethod
    def accumulate(cls, adapter_cls, idiom: str, spec, state: State, micro_batches: list, cotangents: list,
                   lr: float) -> AccumulationRun:
        """One accumulated SGD step over `micro_batches` (each with its cotangent dy), and one step on their
        concatenation, both from `state`."""
        raise NotImplementedError(f"{cls.__name__}: accumulate")

    @classmethod
    def average(cls, adapter_cls, idiom: str, spec, state: State, batches: list, cotangents: list,
                lr: float) -> AveragingRun:
        """T = len(batches) SGD steps from `state`, the idiom's averaging updated after each step; what the averaged
        model holds at the end (after the idiom's finalization: update_bn, finalize_variable_values, ...)."""
        raise NotImplementedError(f"{cls.__name__}: average")
