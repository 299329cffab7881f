"""The float64 oracle of the training loops (NumPy only), built on the layer oracle bnsuite/adapters/reference.py.

Every loop minimizes L = sum(y * dy) / m per (micro-)batch of m samples with plain SGD (w <- w - lr * g); the layer
is in training mode, so every forward normalizes with its own batch statistics and moves the running statistics once.
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters import reference as ref
from bnsuite.adapters.base import State


def grad_params(x, dy, scale, eps: float, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(dscale, doffset) of L = sum(y * dy) / m through the batch statistics of x."""
    _, dscale, doffset = ref.backward_train(x, dy, scale, eps, axis)
    m = np.asarray(x).shape[0]
    return dscale / m, doffset / m


def accumulated_grad(micro_batches, cotangents, scale, eps: float, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean of the k micro-batch gradients, each through its own micro-batch's statistics."""
    gs = [grad_params(x, dy, scale, eps, axis) for x, dy in zip(micro_batches, cotangents)]
    return np.mean([g[0] for g in gs], axis=0), np.mean([g[1] for g in gs], axis=0)


def large_batch_grad(micro_batches, cotangents, scale, eps: float, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The gradient of one step on the concatenated batch (its statistics pool every micro-batch)."""
    return grad_params(np.concatenate(micro_batches), np.concatenate(cotangents), scale, eps, axis)


def sgd(state: State, grads, lr: float, running: tuple) -> State:
    return State(state.scale - lr * grads[0], state.offset - lr * grads[1], *running)


def accumulation(state: State, micro_batches, cotangents, *, eps: float, axis: int, momentum, estimator: str,
                 lr: float, statistics_updates: str) -> tuple[State, State]:
    """(the state after one accumulated step, the state after one large-batch step), from `state`.

    "every-micro-batch": k momentum updates, one with each micro-batch's statistics; "once": a single update with
    the concatenated batch's statistics."""
    if statistics_updates == "every-micro-batch":
        running = ref.train_steps(micro_batches, state.mean, state.var, momentum, estimator, axis)
    elif statistics_updates == "once":
        running = ref.train_steps([np.concatenate(micro_batches)], state.mean, state.var, momentum, estimator, axis)
    else:
        raise ValueError(f"unknown statistics_updates {statistics_updates!r}")
    acc = sgd(state, accumulated_grad(micro_batches, cotangents, state.scale, eps, axis), lr, running)
    big = np.concatenate(micro_batches)
    large_running = ref.train_steps([big], state.mean, state.var, momentum, estimator, axis)
    large = sgd(state, large_batch_grad(micro_batches, cotangents, state.scale, eps, axis), lr, large_running)
    return acc, large


def trajectory(state: State, batches, cotangents, *, eps: float, axis: int, momentum, estimator: str,
               lr: float) -> list[State]:
    """The training model's state after each of T SGD steps (one batch each), from `state`."""
    out, cur = [], state
    for step, (x, dy) in enumerate(zip(batches, cotangents), start=1):
        g = grad_params(x, dy, cur.scale, eps, axis)
        running = ref.update_running(cur.mean, cur.var, ref.moments(x, axis), momentum, estimator, step)
        cur = sgd(cur, g, lr, running)
        out.append(cur)
    return out


def average(values: list[np.ndarray], kind: str, decay: float | None, initial=None) -> np.ndarray:
    """The average of the snapshots `values` (one after each step) by the averaging kind (AVERAGING_KINDS);
    `initial` is the value before the first step (where the kind starts from it)."""
    v = [np.asarray(a, np.float64) for a in values]
    if kind == "equal":
        return np.mean(v, axis=0)
    if kind == "ema-first-copy":
        a = v[0]
        for w in v[1:]:
            a = decay * a + (1 - decay) * w
        return a
    if kind == "ema-from-initial":
        if initial is None:
            raise ValueError("ema-from-initial needs the value before the first step")
        a = np.asarray(initial, np.float64)
        for w in v:
            a = decay * a + (1 - decay) * w
        return a
    if kind == "ema-debiased":
        e = np.zeros_like(v[0])
        for w in v:
            e = decay * e + (1 - decay) * w
        return e / (1 - decay ** len(v))
    raise ValueError(f"unknown averaging kind {kind!r}")


def running_candidates(state: State, snapshots: list[State], batches, *, kind: str, decay: float | None,
                       axis: int, estimator: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each candidate (RUNNING_STATS_CANDIDATES) for the averaged model's (running mean, running var)."""
    recomputed = ref.train_steps(batches, np.zeros_like(state.mean), np.ones_like(state.var), None, estimator, axis)
    return {
        "averaged": (average([s.mean for s in snapshots], kind, decay, state.mean),
                     average([s.var for s in snapshots], kind, decay, state.var)),
        "live": (snapshots[-1].mean, snapshots[-1].var),
        "initial": (state.mean, state.var),
        "recomputed": recomputed,
    }
