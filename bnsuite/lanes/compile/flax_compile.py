"""Flax's compiled and transformed paths: linen apply under jax.jit and op by op, jax.value_and_grad through training
mode, linen nn.vmap with and without batch_stats in variable_axes; nnx.jit with nnx.value_and_grad, nnx.vmap with
the module broadcast. Each path runs over the flax adapter's layer (its module and its loaded state).
"""

from __future__ import annotations

import time

import numpy as np

from bnsuite.adapters.base import Cited, Grads, State
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

_SCAN = "flax/linen/transforms.py: scan -> lift.scan (flax/core/lift.py): variable_axes / variable_broadcast / " \
        "variable_carry say how each collection meets the scanned steps"
_NNX_SCAN = "flax/nnx/transforms/iteration.py: scan"
# The paths whose freeze idioms run: the adapter's own freeze step traced whole under jax.jit / nnx.jit.
FREEZE_UNDER = ("linen-jax.jit-apply", "nnx.jit")
SCANS = {"linen-nn.scan-batch_stats-carry": {"variable_carry": "batch_stats", "variable_broadcast": "params"},
         "linen-nn.scan-batch_stats-axis0": {"variable_axes": {"batch_stats": 0}, "variable_broadcast": "params"},
         "linen-nn.scan-batch_stats-broadcast": {"variable_broadcast": ["params", "batch_stats"]},
         "linen-nn.scan-batch_stats-not-lifted": {"variable_broadcast": "params"}}

LINEN = {
    "linen-jax.jit-apply": Cited(PathFacts(
        "jax.jit(lambda v, x: bn.apply(v, x, use_running_average=False, mutable=['batch_stats']))",
        cumulative="n/a", freeze=("use_running_average_true", "use_running_average_false_mutable",
                                  "optax_masked_params")), f"{_LINEN}; the adapter's own eager path is this jitted apply, its gradients another "
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
    "linen-nn.scan-batch_stats-carry": Cited(PathFacts(
        "nn.scan(Step, variable_carry='batch_stats', variable_broadcast='params') over the stacked batches, Step "
        "calling nn.BatchNorm(use_running_average=False)", cumulative="n/a"),
        f"{_SCAN}; a carried collection goes from each step into the next, so the steps update the statistics in "
        "sequence as eager calls do (the form google/flax#2052 uses)"),
    "linen-nn.scan-batch_stats-axis0": Cited(PathFacts(
        "nn.scan(Step, variable_axes={'batch_stats': 0}, variable_broadcast='params') over the stacked batches, "
        "the loaded statistics stacked once per step; the last step's copy kept", running_stats="per-step",
        cumulative="n/a"),
        f"{_SCAN}; a collection in variable_axes is scanned like xs: step i reads and writes slice i only, so each "
        "step updates its own copy of the loaded statistics with its own batch, never the previous step's"),
    "linen-nn.scan-batch_stats-broadcast": Cited(PathFacts(
        "nn.scan(Step, variable_broadcast=['params', 'batch_stats']) over the stacked batches",
        running_stats="error:ValueError", eval_switch="running", grads="error:ValueError", cumulative="n/a"),
        f"{_SCAN}; flax/core/lift.py scan: a broadcast collection must not depend on the scan body, and the "
        "statistics update does: 'broadcasted variable has a data dependency on the scan body'"),
    "linen-nn.scan-batch_stats-not-lifted": Cited(PathFacts(
        "nn.scan(Step, variable_broadcast='params') over the stacked batches (batch_stats named nowhere)",
        running_stats="error:ScopeCollectionNotFound", eval_switch="running", grads="error:ScopeCollectionNotFound",
        cumulative="n/a"),
        f"{_SCAN}; a collection named in none of variable_axes/variable_broadcast/variable_carry is not lifted into "
        "the scanned scope, so BatchNorm finds 'batch_stats' empty (flax/errors.py: ScopeCollectionNotFound; "
        "google/flax#3602)"),
}

NNX = {
    "nnx.jit": Cited(PathFacts(
        "nnx.jit(lambda m, x: m(x, use_running_average=False)), gradients by nnx.jit(nnx.value_and_grad(...))",
        cumulative="n/a", freeze=("eval", "view_use_running_average", "optimizer_excludes_bn_params")), f"{_NNX}; {_NNX_T}; {_JIT}"),
    "nnx.vmap-module-broadcast": Cited(PathFacts(
        "nnx.vmap(lambda m, a: m(a), in_axes=(None, 0))(bn, x[None])", running_stats="error:ValueError",
        grads="error:ValueError", cumulative="n/a"),
        f"{_NNX}; flax/nnx/transforms/iteration.py: vmap with in_axes None broadcasts the module's state, whose "
        "BatchStat update comes out batched: jax's vmap raises 'got axis spec None but output was batched'"),
    "nnx.scan-module-carry": Cited(PathFacts(
        "nnx.scan(lambda m, x: (m, m(x, use_running_average=False)), in_axes=(nnx.Carry, 0), "
        "out_axes=(nnx.Carry, 0))(bn, xs)", cumulative="n/a"),
        f"{_NNX}; {_NNX_SCAN}: a module marked Carry goes from each step into the next and its state is merged "
        "back into bn afterwards, so the steps update the BatchStats in sequence as eager calls do"),
    "nnx.scan-module-broadcast": Cited(PathFacts(
        "nnx.scan(lambda m, x: m(x, use_running_average=False), in_axes=(None, 0), out_axes=0)(bn, xs)",
        running_stats="dropped", cumulative="n/a"),
        f"{_NNX}; {_NNX_SCAN}: in_axes None broadcasts the module's state into every step ('None marks the input "
        "data as auxiliary input'), each step updates its own copy, and ScanFn puts the broadcast output state into "
        "_broadcast_deque_out_tmp, commented 'discarded': bn's BatchStats never move, with no error (nnx.vmap "
        "raises in the same situation)"),
}


class _FlaxLane(CompileLane):
    framework = "flax"

    def run(self, path, spec, state, batches, dy, grads=True):
        start = time.perf_counter()
        bn = self._layer(spec, state)
        kept = bn.get_state
        if "scan" in path:
            step, infer, kept = self._scan_steps(bn, batches, *self._scan(path, bn, dy))
        else:
            step, infer = self._path(path, bn)

        def canonical_step(x, want):
            y, g = step(bn._x(x), bn._x(dy), want)
            if g is not None:
                dx, dp = g
                g = Grads(np.asarray(dx, np.float64), np.asarray(dp["scale"], np.float64),
                          np.asarray(dp["bias"], np.float64))
            return y, g

        return self._run_steps(bn, canonical_step, lambda x: infer(bn._x(x)), kept, batches, grads, start)

    def freeze(self, path, idiom, spec, state, x, dy, lr):
        """The adapter's own freeze step (its optimizer step after the idiom) traced whole under the path's jit."""
        if path not in FREEZE_UNDER:
            raise NotImplementedError(f"{type(self).__name__}: no freeze idioms under {path}")
        bn = self._layer(spec, state)
        y = self._jitted_frozen_step(bn, idiom, bn._x(x), bn._x(dy), lr)
        return np.asarray(y, np.float64), bn.get_state()

    @staticmethod
    def _scan_steps(bn, batches, scan_all, infer):
        """A path that runs every batch in one scanned call, read one step at a time: the first step runs
        scan_all(xs, want_grads) -> (outputs, [(mean, var) after each step] or None where the path keeps no state
        but bn's, gradients or None); each later step reads the next output of that call. infer(x) after them."""
        import jax.numpy as jnp

        done: dict = {}

        def step(x, dy, want):
            if not done:
                done["ys"], done["stats"], g = scan_all(jnp.stack([bn._x(b) for b in batches]), want)
                done["i"] = 0
            else:
                g = None
            done["i"] += 1
            return done["ys"][done["i"] - 1], g  # the scanned call's output for this step's batch, x

        def kept() -> State:
            st = bn.get_state()
            if done.get("stats") is None:
                return st
            mean, var = done["stats"][done["i"] - 1]
            return State(st.scale, st.offset, np.asarray(mean, np.float64), np.asarray(var, np.float64))

        return step, infer, kept


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

    @staticmethod
    def _jitted_frozen_step(bn, idiom, xj, dyj, lr):
        import jax

        def pure(variables, xj, dyj):
            bn.variables = variables  # the adapter's step reads and replaces bn.variables: traced values here
            y = bn._frozen_step(idiom, xj, dyj, lr)
            return y, bn.variables

        y, bn.variables = jax.jit(pure)(bn.variables, xj, dyj)
        return y

    def _scan(self, path, bn, dy):
        import flax.linen as nn
        import jax
        import jax.numpy as jnp

        m = bn.module
        kwargs = {k: getattr(m, k) for k in ("axis", "momentum", "epsilon", "use_bias", "use_scale", "dtype")}
        per_step = "variable_axes" in SCANS[path]
        dyj = bn._x(dy)

        class Step(nn.Module):
            @nn.compact
            def __call__(self, carry, x):
                layer = nn.BatchNorm(use_running_average=False, **kwargs)
                y = layer(x)
                return carry, (y, layer.variables["batch_stats"])

        infer = jax.jit(lambda v, x: m.apply(v, x, use_running_average=True))

        def scan_all(xs, want):
            scanned = nn.scan(Step, split_rngs={"params": False}, length=xs.shape[0], **SCANS[path])()
            stats = bn.variables["batch_stats"]
            if per_step:  # the loaded statistics, once per scanned step
                stats = jax.tree.map(lambda t: jnp.stack([t] * xs.shape[0]), stats)
            run = jax.jit(lambda p, xs: scanned.apply({"params": {"BatchNorm_0": p}, "batch_stats": {
                "BatchNorm_0": stats}}, (), xs, mutable=["batch_stats"]))
            (_, (ys, seen)), upd = run(bn.variables["params"], xs)
            g = None
            if want:
                loss = lambda p, xs: jnp.sum(run(p, xs)[0][1][0][0] * dyj)
                dp, dxs = jax.jit(jax.grad(loss, argnums=(0, 1)))(bn.variables["params"], xs)
                g = (dxs[0], dp)
            final = upd["batch_stats"]["BatchNorm_0"]
            # per step: the statistics stacked once per step; the last step's copy is the one kept
            bn.variables = {**bn.variables, "batch_stats": jax.tree.map(lambda t: t[-1], final) if per_step else final}
            return list(ys), list(zip(seen["mean"], seen["var"])), g
        return scan_all, lambda x: infer(bn.variables, x)


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

    @staticmethod
    def _jitted_frozen_step(bn, idiom, xj, dyj, lr):
        from flax import nnx

        def pure(m, xj, dyj):
            bn.bn = m  # the adapter's step works on bn.bn: nnx.jit's traced module here, merged back after
            return bn._frozen_step(idiom, xj, dyj, lr)

        module = bn.bn
        y = nnx.jit(pure)(module, xj, dyj)
        bn.bn = bn._bn_module = module
        return y

    def _scan(self, path, bn, dy):
        import jax.numpy as jnp
        from flax import nnx

        carried = path == "nnx.scan-module-carry"
        dyj = bn._x(dy)

        def body(m, x):
            y = m(x, use_running_average=False)
            return (m, (y, m.mean[...], m.var[...])) if carried else y

        scanned = nnx.scan(body, in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0)) if carried else \
            nnx.scan(body, in_axes=(None, 0), out_axes=0)
        outputs = (lambda m, xs: scanned(m, xs)[1][0]) if carried else scanned
        infer = nnx.jit(lambda m, x: m(x, use_running_average=True))

        def scan_all(xs, want):
            g = None
            if want:  # on a copy, so that only the call below moves bn's statistics
                loss = lambda m, xs: jnp.sum(outputs(m, xs)[0] * dyj)
                dp, dxs = nnx.grad(loss, argnums=(nnx.DiffState(0, nnx.Param), 1))(nnx.clone(bn.bn), xs)
                g = (dxs[0], {"scale": dp["scale"][...], "bias": dp["bias"][...]})
            out = scanned(bn.bn, xs)
            if not carried:  # the path keeps no statistics but bn's own
                return list(out), None, g
            _, (ys, means, variances) = out
            return list(ys), list(zip(means, variances)), g
        return scan_all, lambda x: infer(bn.bn, x)
