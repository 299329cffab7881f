"""Flax NNX adapter: flax.nnx.BatchNorm, a stateful module whose BatchStat variables update in place."""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import BatchNormAdapter, Cited, FreezeFacts, Grads, State, Unsupported, dtype_name
from bnsuite.adapters.flax_common import (NNX, flax_declaration, gpu_reason, jax_device, jax_versions,
                                  with_x64)

MODULE = "flax/nnx/module.py"


class FlaxNnx(BatchNormAdapter):
    id = "flax-nnx"
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
            NNX, "flax.nnx",
            training_default=Cited("training", f"{NNX}: BatchNorm.__init__(use_running_average: bool | None = False)"),
            batch_stats_inference=Cited("use_running_average=False", f"{NNX}: use_running_average=False "
                                        "normalizes with batch statistics and updates the BatchStat variables"),
            freeze={
                "eval": Cited(FreezeFacts("running", False, True),
                              f"{MODULE}: Module.eval sets use_running_average=True; an Optimizer(wrt=nnx.Param) "
                              "still updates scale/bias"),
                "train": Cited(FreezeFacts("batch", True, True), f"{MODULE}: Module.train sets "
                                                                 "use_running_average=False"),
                "view_use_running_average": Cited(FreezeFacts("running", False, True),
                                                  f"{MODULE}: nnx.view(node, use_running_average=True) shares the "
                                                  "arrays and sets the attribute on the view"),
                "optimizer_excludes_bn_params": Cited(
                    FreezeFacts("batch", True, False),
                    "flax/nnx/training/optimizer.py: Optimizer(model, tx, wrt=filter) updates only the state that "
                    "matches wrt; BatchStat is updated by the forward pass"),
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
        import jax
        import jax.numpy as jnp
        from flax import nnx

        if spec.momentum is None and not spec.use_defaults:
            raise Unsupported("flax has no cumulative moving average (momentum=None); declared")
        self.jax, self.jnp, self.nnx = jax, jnp, nnx
        self.device = jax_device(spec.device)
        kwargs = {"dtype": spec.dtype}
        if not spec.use_defaults:
            kwargs.update(axis=spec.channel_axis, momentum=1.0 - spec.momentum, epsilon=spec.eps,
                          use_bias=spec.affine, use_scale=spec.affine)
        elif not spec.channels_last:
            kwargs.update(axis=1)
        self._kwargs = kwargs
        with jax.default_device(self.device):
            self.bn = nnx.BatchNorm(spec.num_features, rngs=nnx.Rngs(0), **kwargs)

    def _x(self, x):
        return self.jax.device_put(self.jnp.asarray(np.asarray(x), self.spec.dtype), self.device)

    @with_x64
    def forward(self, x, training):
        if training is None:
            y = self.bn(self._x(x))
        elif not training and not self.spec.track_running_stats:
            # batch statistics at inference: run on a copy so the BatchStat update is discarded
            y = self.nnx.clone(self.bn)(self._x(x), use_running_average=False)
        else:
            y = self.bn(self._x(x), use_running_average=not training)
        self.last_output_dtype = dtype_name(y.dtype)
        return np.asarray(y, np.float64)

    def state_dtypes(self):
        bn = self.bn
        d = lambda v: None if v is None else dtype_name(v[...].dtype)
        return {"scale": d(bn.scale), "offset": d(bn.bias), "mean": d(bn.mean), "var": d(bn.var)}

    @with_x64
    def backward(self, x, dy, training):
        """nnx.grad of sum(y * dy) w.r.t. the Params and x, on a clone so the BatchStat update is discarded."""
        nnx, jnp = self.nnx, self.jnp
        model = nnx.clone(self.bn)
        dyj = self._x(dy)

        def loss(mdl, xj):
            return jnp.sum(mdl(xj, use_running_average=not training) * dyj)

        dparams, dx = nnx.grad(loss, argnums=(nnx.DiffState(0, nnx.Param), 1))(model, self._x(x))
        g = lambda name: None if getattr(self.bn, name, None) is None else np.asarray(dparams[name][...], np.float64)
        return Grads(np.asarray(dx, np.float64), g("scale"), g("bias"))

    @with_x64
    def get_state(self) -> State:
        bn = self.bn
        g = lambda v: None if v is None else np.asarray(v[...], np.float64).copy()
        return State(g(bn.scale), g(bn.bias), g(bn.mean), g(bn.var))

    @with_x64
    def set_state(self, state: State) -> None:
        bn, jnp = self.bn, self.jnp
        for var, val in ((bn.scale, state.scale), (bn.bias, state.offset), (bn.mean, state.mean),
                         (bn.var, state.var)):
            if var is not None and val is not None:
                var[...] = self.jax.device_put(jnp.asarray(val, var[...].dtype), self.device)

    def hyperparameters(self):
        bn = self.bn
        return {"eps": bn.epsilon, "momentum": bn.momentum, "channels_last": bn.axis in (-1, self.spec.rank - 1)}

    @with_x64
    def frozen_step(self, idiom, x, dy, lr):
        """One nnx.Optimizer (optax SGD) step on loss = sum(y * dy) after the idiom."""
        import optax

        nnx, jnp = self.nnx, self.jnp
        bn = self.bn
        xj, dyj = self._x(x), self._x(dy)
        wrt = nnx.Param
        if idiom == "eval":
            bn.eval()
        elif idiom == "train":
            bn.train()
        elif idiom == "view_use_running_average":
            bn.train()
        elif idiom == "optimizer_excludes_bn_params":
            bn.train()
            # the fine-tuning pattern: optimize every Param except BatchNorm's scale and bias
            wrt = nnx.All(nnx.Param, lambda path, value: not any(p in ("scale", "bias") for p in path))
        else:
            raise Unsupported(f"flax-nnx: unknown freeze idiom {idiom!r}")
        opt = nnx.Optimizer(bn, optax.sgd(lr), wrt=wrt)
        target = nnx.view(bn, use_running_average=True) if idiom == "view_use_running_average" else bn

        def loss(model):
            y = model(xj)
            return jnp.sum(y * dyj), y

        (_, y), grads = nnx.value_and_grad(loss, argnums=nnx.DiffState(0, wrt), has_aux=True)(target)
        opt.update(bn, grads)
        return np.asarray(y, np.float64)

    def snippet(self):
        kw = ", ".join(f"{k}={v!r}" for k, v in self._kwargs.items())
        return (f"from flax import nnx\nbn = nnx.BatchNorm({self.spec.num_features}, {kw}, rngs=nnx.Rngs(0))\n"
                "y = bn(x, use_running_average=False)")
