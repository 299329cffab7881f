"""Flax linen adapter: flax.linen.BatchNorm with the `batch_stats` collection, applied through jax.jit."""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import BatchNormAdapter, Cited, FreezeFacts, Grads, State, Unsupported, dtype_name
from bnsuite.adapters.flax_common import (LINEN, flax_declaration, gpu_reason, jax_device, jax_versions,
                                  with_x64)


class FlaxLinen(BatchNormAdapter):
    id = "flax-linen"
    requires = ("flax", "jax")
    families = ("flax", "jax")

    @classmethod
    def numeric_settings(cls) -> dict:
        """TF32 and similar reduced-precision float32 modes off (bnsuite.adapters.numerics), as recorded."""
        from bnsuite.adapters import numerics

        return numerics.jax_full_fp32()

    @classmethod
    def declare(cls):
        return flax_declaration(
            LINEN, "flax.linen",
            training_default=Cited("error:ValueError", "flax/linen/module.py: merge_param raises 'Parameter "
                                   "\"use_running_average\" must be passed to the constructor or at call time.'"),
            batch_stats_inference=Cited("use_running_average=False", f"{LINEN}: use_running_average=False "
                                        "normalizes with batch statistics; the update lands only in the returned "
                                        "mutable batch_stats, which inference can discard"),
            freeze={
                "use_running_average_true": Cited(FreezeFacts("running", False, True),
                                                  f"{LINEN}: use_running_average=True reads ra_mean/ra_var, no update"),
                "use_running_average_true_mutable": Cited(
                    FreezeFacts("running", False, True),
                    f"{LINEN}: the update is guarded by `not use_running_average`; a mutable batch_stats collection "
                    "comes back unchanged"),
                "use_running_average_false_mutable": Cited(FreezeFacts("batch", True, True),
                                                           f"{LINEN}: the update writes batch_stats"),
                "use_running_average_false_immutable": Cited(
                    FreezeFacts("batch", False, False, error="ModifyScopeVariableError"),
                    "flax/core/scope.py: put_variable raises errors.ModifyScopeVariableError when the collection "
                    "is not mutable"),
                "optax_masked_params": Cited(FreezeFacts("batch", True, False),
                                             "optax.masked / set_to_zero leaves masked params untouched; batch_stats "
                                             f"are not params and still update ({LINEN})"),
            },
        )

    @classmethod
    def versions(cls):
        return jax_versions()

    @classmethod
    def supported_dtypes(cls):
        # float64 runs inside jax.enable_x64 (adapters/flax_common.py: x64_scope), not process-wide.
        return ("float32", "float64", "float16", "bfloat16")

    @classmethod
    def device_unavailable_reason(cls, device):
        return gpu_reason(device)

    @with_x64
    def __init__(self, spec):
        super().__init__(spec)
        import flax.linen as nn
        import jax
        import jax.numpy as jnp

        if spec.momentum is None and not spec.use_defaults:
            raise Unsupported("flax has no cumulative moving average (momentum=None); declared")
        self.jax, self.jnp = jax, jnp
        self.device = jax_device(spec.device)
        kwargs = {"dtype": spec.dtype}
        if not spec.use_defaults:
            kwargs.update(axis=spec.channel_axis, momentum=1.0 - spec.momentum, epsilon=spec.eps,
                          use_bias=spec.affine, use_scale=spec.affine)
        elif not spec.channels_last:
            kwargs.update(axis=1)
        self.module = nn.BatchNorm(**kwargs)
        self._kwargs = kwargs
        shape = [2] * spec.rank
        shape[spec.channel_axis] = spec.num_features
        x0 = jax.device_put(jnp.zeros(shape, spec.dtype), self.device)
        self.variables = jax.device_put(self.module.init(jax.random.PRNGKey(0), x0, use_running_average=True),
                                        self.device)
        m = self.module
        self._train = jax.jit(lambda v, x: m.apply(v, x, use_running_average=False, mutable=["batch_stats"]))
        self._infer = jax.jit(lambda v, x: m.apply(v, x, use_running_average=True))

    def _x(self, x):
        return self.jax.device_put(self.jnp.asarray(np.asarray(x), self.spec.dtype), self.device)

    @with_x64
    def forward(self, x, training):
        if training is None:
            y = self.module.apply(self.variables, self._x(x))  # raises: linen has no default mode
        elif training or not self.spec.track_running_stats:
            y, updates = self._train(self.variables, self._x(x))
            if training:  # inference with batch statistics discards the update
                self.variables = {**self.variables, **updates}
        else:
            y = self._infer(self.variables, self._x(x))
        self.last_output_dtype = dtype_name(y.dtype)
        return np.asarray(y, np.float64)

    def state_dtypes(self):
        p = self.variables.get("params", {})
        s = self.variables["batch_stats"]
        d = lambda col, k: None if k not in col else dtype_name(col[k].dtype)
        return {"scale": d(p, "scale"), "offset": d(p, "bias"), "mean": d(s, "mean"), "var": d(s, "var")}

    @with_x64
    def backward(self, x, dy, training):
        """jax.grad of sum(y * dy) w.r.t. (params, x); the batch_stats update is returned by apply and dropped."""
        jax, jnp = self.jax, self.jnp
        m = self.module
        params = self.variables.get("params", {})
        stats = self.variables["batch_stats"]
        dyj = self._x(dy)

        def loss(p, xj):
            out = m.apply({"params": p, "batch_stats": stats}, xj, use_running_average=not training,
                          mutable=["batch_stats"] if training else False)
            y = out[0] if training else out
            return jnp.sum(y * dyj)

        dp, dx = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, self._x(x))
        g = lambda k: None if k not in dp else np.asarray(dp[k], np.float64)
        return Grads(np.asarray(dx, np.float64), g("scale"), g("bias"))

    @with_x64
    def get_state(self) -> State:
        p = self.variables.get("params", {})
        s = self.variables["batch_stats"]
        g = lambda d, k: None if k not in d else np.asarray(d[k], np.float64).copy()
        return State(g(p, "scale"), g(p, "bias"), g(s, "mean"), g(s, "var"))

    @with_x64
    def set_state(self, state: State) -> None:
        jnp = self.jnp
        v = {k: dict(val) for k, val in self.variables.items()}
        for col, key, val in (("params", "scale", state.scale), ("params", "bias", state.offset),
                              ("batch_stats", "mean", state.mean), ("batch_stats", "var", state.var)):
            if val is not None and key in v.get(col, {}):
                v[col][key] = self.jax.device_put(jnp.asarray(val, v[col][key].dtype), self.device)
        self.variables = v

    def hyperparameters(self):
        m = self.module
        return {"eps": m.epsilon, "momentum": m.momentum, "channels_last": m.axis in (-1, self.spec.rank - 1)}

    @with_x64
    def frozen_step(self, idiom, x, dy, lr):
        """One optax SGD step on loss = sum(y * dy) with the idiom's apply() arguments."""
        import optax

        jax, jnp = self.jax, self.jnp
        m = self.module
        xj, dyj = self._x(x), self._x(dy)
        use_ra, mutable = {
            "use_running_average_true": (True, False),
            "use_running_average_true_mutable": (True, ["batch_stats"]),
            "use_running_average_false_mutable": (False, ["batch_stats"]),
            "use_running_average_false_immutable": (False, False),
            "optax_masked_params": (False, ["batch_stats"]),
        }.get(idiom, (None, None))
        if use_ra is None:
            raise Unsupported(f"flax-linen: unknown freeze idiom {idiom!r}")
        params, stats = self.variables["params"], self.variables["batch_stats"]

        def loss(p):
            out = m.apply({"params": p, "batch_stats": stats}, xj, use_running_average=use_ra, mutable=mutable)
            y, updates = out if mutable else (out, {})
            return jnp.sum(y * dyj), (y, updates)

        (_, (y, updates)), grads = jax.value_and_grad(loss, has_aux=True)(params)
        tx = optax.sgd(lr)
        if idiom == "optax_masked_params":  # freeze scale/bias in the optimizer only
            tx = optax.masked(tx, jax.tree_util.tree_map(lambda _: False, params))
            tx = optax.chain(tx, optax.masked(optax.set_to_zero(), jax.tree_util.tree_map(lambda _: True, params)))
        steps, _ = tx.update(grads, tx.init(params), params)
        new_params = optax.apply_updates(params, steps)
        self.variables = {"params": new_params, "batch_stats": updates.get("batch_stats", stats)}
        return np.asarray(y, np.float64)

    def snippet(self):
        kw = ", ".join(f"{k}={v!r}" for k, v in self._kwargs.items())
        return ("import flax.linen as nn, jax, jax.numpy as jnp\n"
                f"bn = nn.BatchNorm({kw})\n"
                "variables = bn.init(jax.random.PRNGKey(0), x, use_running_average=True)\n"
                "y, updates = bn.apply(variables, x, use_running_average=False, mutable=['batch_stats'])")
