"""Flax's compiled and transformed paths: linen apply under jax.jit and op by op, jax.value_and_grad through training
mode, linen nn.vmap with and without batch_stats in variable_axes; nnx.jit with nnx.value_and_grad, nnx.vmap with
the module broadcast. Each path runs over the flax adapter's layer (its module and its loaded state).
"""

from __future__ import annotations

import time

import numpy as np

from bnsuite.adapters.base import Cited, Grads
from bnsuite.lanes.compile import CompileLane, PathFacts

_LINEN = "flax/linen/normalization.py: BatchNorm.__call__ updates ra_mean/ra_var in the 'batch_stats' collection " \
         "only when it is mutable; apply(..., mutable=['batch_stats']) returns (y, updates)"
_JIT = "jax/_src/api.py: jit traces the same jnp operations and compiles them with XLA, which fuses and reorders " \
       "the reductions (another float32 evaluation order than op by op)"
_LIFT = "flax/linen/transforms.py: vmap -> lift.vmap (flax/core/lift.py): variable_axes maps each collection to an axis"
_NNX = "flax/nnx/nn/normalization.py: BatchNorm.__call__ assigns self.mean / self.var (BatchStat variables) in place"
_NNX_T = "flax/nnx/transforms/compilation.py: nnx.jit splits the module into graph and state, runs the jitted " \
         "function and merges the updated state back (the BatchStat update survives); " \
         "flax/nnx/transforms/autodiff.py: value_and_grad propagates the non-differentiated state likewise"

LINEN = {
    "linen-jax.jit-apply": Cited(PathFacts(
        "jax.jit(lambda v, x: bn.apply(v, x, use_running_average=False, mutable=['batch_stats']))",
        cumulative="n/a"), f"{_LINEN}; the adapter's own eager path is this jitted apply, its gradients another "
                           f"jitted program (jax.grad without aux); {_JIT}"),
    "linen-apply-op-by-op": Cited(PathFacts(
        "with jax.disable_jit(): bn.apply(v, x, use_running_average=False, mutable=['batch_stats'])",
        cumulative="n/a"), f"{_LINEN}; {_JIT}"),
    "linen-jax.value_and_grad-has_aux": Cited(PathFacts(
        "jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)) with the batch_stats updates as aux",
        cumulative="n/a"), f"{_LINEN}; jax/_src/api.py: value_and_grad(has_aux=True) returns the auxiliary "
                           f"updates; {_JIT}"),
    "linen-nn.vmap-batch_stats-axis0": Cited(PathFacts(
        "nn.vmap(nn.BatchNorm, variable_axes={'params': None, 'batch_stats': 0}) over x[None]", cumulative="n/a"),
        f"{_LIFT}; batch_stats mapped on axis 0: one set of statistics per vmapped index"),
    "linen-nn.vmap-batch_stats-broadcast": Cited(PathFacts(
        "nn.vmap(nn.BatchNorm, variable_axes={'params': None, 'batch_stats': None}) over x[None]",
        running_stats="error:ValueError", grads="error:ValueError", cumulative="n/a"),
        f"{_LIFT}; a broadcast (axis None) collection must come out unbatched, but the update is batched: "
        "jax/_src/api.py vmap raises 'got axis spec None but output was batched on axis 0' (google/flax#3319)"),
    "linen-nn.vmap-batch_stats-not-lifted": Cited(PathFacts(
        "nn.vmap(nn.BatchNorm, variable_axes={'params': None}) over x[None]", running_stats="error:ScopeCollectionNotFound",
        eval_switch="error:ScopeCollectionNotFound", grads="error:ScopeCollectionNotFound", cumulative="n/a"),
        f"{_LIFT}; a collection not named in variable_axes is not lifted into the vmapped scope, so "
        "BatchNorm finds 'batch_stats' empty (flax/errors.py: ScopeCollectionNotFound; google/flax#2052)"),
}

NNX = {
    "nnx.jit": Cited(PathFacts(
        "nnx.jit(lambda m, x: m(x, use_running_average=False)), gradients by nnx.jit(nnx.value_and_grad(...))",
        cumulative="n/a"), f"{_NNX}; {_NNX_T}; {_JIT}"),
    "nnx.vmap-module-broadcast": Cited(PathFacts(
        "nnx.vmap(lambda m, a: m(a), in_axes=(None, 0))(bn, x[None])", running_stats="error:ValueError",
        grads="error:ValueError", cumulative="n/a"),
        f"{_NNX}; flax/nnx/transforms/iteration.py: vmap with in_axes None broadcasts the module's state, whose "
        "BatchStat update comes out batched: jax's vmap raises 'got axis spec None but output was batched'"),
}


class _FlaxLane(CompileLane):
    framework = "flax"

    def run(self, path, spec, state, batches, dy, grads=True):
        start = time.perf_counter()
        bn = self._layer(spec, state)
        step, infer = self._path(path, bn)

        def canonical_step(x, want):
            y, g = step(bn._x(x), bn._x(dy), want)
            if g is not None:
                dx, dp = g
                g = Grads(np.asarray(dx, np.float64), np.asarray(dp["scale"], np.float64),
                          np.asarray(dp["bias"], np.float64))
            return y, g

        return self._run_steps(bn, canonical_step, lambda x: infer(bn._x(x)), bn.get_state, batches, grads, start)


class FlaxLinenCompile(_FlaxLane):
    @classmethod
    def declare(cls):
        return LINEN

    def _path(self, path, bn):
        import flax.linen as nn
        import jax
        import jax.numpy as jnp

        m = bn.module
        train = lambda v, x: m.apply(v, x, use_running_average=False, mutable=["batch_stats"])
        infer = lambda v, x: m.apply(v, x, use_running_average=True)

        def loss(p, x, dy, stats):
            y, upd = m.apply({"params": p, "batch_stats": stats}, x, use_running_average=False,
                             mutable=["batch_stats"])
            return jnp.sum(y * dy), (y, upd)
        vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))

        def grads_of(x, dy):
            (_, (_, _)), (dp, dx) = vg(bn.variables["params"], x, dy, bn.variables["batch_stats"])
            return dx, dp

        def plain(fn_train, fn_infer):
            def step(x, dy, want):
                g = grads_of(x, dy) if want else None
                y, upd = fn_train(bn.variables, x)
                bn.variables = {**bn.variables, **upd}
                return y, g
            return step, lambda x: fn_infer(bn.variables, x)

        if path == "linen-jax.jit-apply":
            return plain(jax.jit(train), jax.jit(infer))
        if path == "linen-apply-op-by-op":
            def eager(fn):
                def run(v, x):
                    with jax.disable_jit():
                        return fn(v, x)
                return run
            return plain(eager(train), eager(infer))
        if path == "linen-jax.value_and_grad-has_aux":
            def step(x, dy, want):
                (_, (y, upd)), (dp, dx) = vg(bn.variables["params"], x, dy, bn.variables["batch_stats"])
                bn.variables = {**bn.variables, **upd}
                return y, (dx, dp) if want else None
            return step, lambda x: jax.jit(infer)(bn.variables, x)
        axes = {"linen-nn.vmap-batch_stats-axis0": {"params": None, "batch_stats": 0},
                "linen-nn.vmap-batch_stats-broadcast": {"params": None, "batch_stats": None},
                "linen-nn.vmap-batch_stats-not-lifted": {"params": None}}[path]
        mapped = axes.get("batch_stats") == 0
        kwargs = {k: getattr(m, k) for k in ("axis", "momentum", "epsilon", "use_bias", "use_scale", "dtype")}
        vbn = lambda ura: nn.vmap(nn.BatchNorm, variable_axes=axes, split_rngs={"params": False})(
            use_running_average=ura, **kwargs)
        vtrain, vinfer = vbn(False), vbn(True)
        lift = (lambda t: t[None]) if mapped else (lambda t: t)
        drop = (lambda t: t[0]) if mapped else (lambda t: t)

        def lifted():
            return {"params": bn.variables["params"],
                    **({"batch_stats": jax.tree.map(lift, bn.variables["batch_stats"])} if "batch_stats" in axes else {})}

        def step(x, dy, want):
            y, upd = vtrain.apply(lifted(), x[None], mutable=["batch_stats"])
            g = None
            if want:
                def vloss(p, xx):
                    yy, _ = vtrain.apply({**lifted(), "params": p}, xx[None], mutable=["batch_stats"])
                    return jnp.sum(yy[0] * dy)
                dp, dx = jax.grad(vloss, argnums=(0, 1))(bn.variables["params"], x)
                g = (dx, dp)
            bn.variables = {**bn.variables, "batch_stats": jax.tree.map(drop, upd["batch_stats"])}
            return y[0], g
        return step, lambda x: vinfer.apply(lifted(), x[None])[0]


class FlaxNnxCompile(_FlaxLane):
    @classmethod
    def declare(cls):
        return NNX

    def _path(self, path, bn):
        import jax.numpy as jnp
        from flax import nnx

        if path == "nnx.jit":
            train = nnx.jit(lambda m, x: m(x, use_running_average=False))
            infer = nnx.jit(lambda m, x: m(x, use_running_average=True))

            def loss(m, x, dy):
                y = m(x, use_running_average=False)
                return jnp.sum(y * dy), y
            vg = nnx.jit(nnx.value_and_grad(loss, argnums=(nnx.DiffState(0, nnx.Param), 1), has_aux=True))

            def step(x, dy, want):
                if not want:
                    return train(bn.bn, x), None
                (_, y), (dp, dx) = vg(bn.bn, x, dy)
                return y, (dx, {"scale": dp["scale"][...], "bias": dp["bias"][...]})
            return step, lambda x: infer(bn.bn, x)
        if path == "nnx.vmap-module-broadcast":
            train = nnx.vmap(lambda m, a: m(a, use_running_average=False), in_axes=(None, 0))
            infer = nnx.vmap(lambda m, a: m(a, use_running_average=True), in_axes=(None, 0))
            return (lambda x, dy, want: (train(bn.bn, x[None])[0], None)), lambda x: infer(bn.bn, x[None])[0]
        raise KeyError(path)
