"""Flax linen adapter: flax.linen.BatchNorm with the `batch_stats` collection, applied through jax.jit."""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from bnsuite.adapters.base import Cited, FreezeFacts, FreezeIdiom, dtype_name
from bnsuite.adapters.conventions import build_shape
from bnsuite.adapters.flax_common import (LINEN, FlaxAdapter, as_jax, flax_capabilities, flax_declaration,
                                         shared_jit, with_x64)
from bnsuite.adapters.mixed_precision import flax_mixed

# State slot -> (variable collection, name) in linen's variables.
LINEN_SLOTS = {"scale": ("params", "scale"), "offset": ("params", "bias"), "mean": ("batch_stats", "mean"),
               "var": ("batch_stats", "var")}

class LinenRecipe(NamedTuple):
    """How a linen freeze idiom runs the optimizer step, read alike by the lone layer and the networks."""

    use_running_average: bool  # of the apply() call that takes the step
    mutable: list | bool  # of that apply() call
    mask_params: bool = False  # optax masks BatchNorm's scale and bias out of the update


LINEN_IDIOMS = {
    "use_running_average_true": FreezeIdiom(LinenRecipe(True, False)),
    "use_running_average_true_mutable": FreezeIdiom(LinenRecipe(True, ["batch_stats"])),
    "use_running_average_false_mutable": FreezeIdiom(LinenRecipe(False, ["batch_stats"])),
    "use_running_average_false_immutable": FreezeIdiom(LinenRecipe(False, False)),
    "optax_masked_params": FreezeIdiom(LinenRecipe(False, ["batch_stats"], mask_params=True)),
}


class FlaxLinen(FlaxAdapter):
    id = "flax-linen"
    capabilities = {**flax_capabilities("linen"), "models": "bnsuite.models.flax_models:MODELS"}
    freeze_idioms = LINEN_IDIOMS

    @classmethod
    def declare(cls):
        return flax_declaration(
            LINEN, "flax.linen", mixed_precision=flax_mixed.declared(nnx=False),
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

    @with_x64
    def __init__(self, spec):
        super().__init__(spec)
        import flax.linen as nn

        self.module = self._bn_module = nn.BatchNorm(**self._kwargs)
        self._use(self.module, build_shape(spec, 2))

    def _use(self, m, x_shape):
        """Take `m` as the layer, with the variables of its init on zeros of `x_shape`; the jitted train and
        inference applies serve every layer of the process with the same constructor arguments and shapes."""
        jax = self.jax
        self.module = m
        x0 = as_jax(np.zeros(x_shape), self.spec.dtype, self.device)
        self.variables = jax.device_put(shared_jit(_init, 1)(m, jax.random.PRNGKey(0), x0), self.device)
        self._train = functools.partial(shared_jit(_train_apply, 1), m)
        self._infer = functools.partial(shared_jit(_infer_apply, 1), m)

    def _slot(self, name):
        col, key = LINEN_SLOTS[name]
        return (col, key) if key in self.variables.get(col, {}) else None

    def _read(self, handle):
        col, key = handle
        return self.variables[col][key]

    def _write(self, handle, value):
        col, key = handle
        self.variables = {**self.variables, col: {**self.variables[col], key: self._put(value, self._read(handle))}}

    def _dtype(self, handle):
        return dtype_name(self._read(handle).dtype)

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

    @with_x64
    def rebuild_with_axes(self, axes, x_shape):
        import flax.linen as nn

        self._use(nn.BatchNorm(**{**self._kwargs, "axis": tuple(axes)}), x_shape)

    @with_x64
    def forward_constructed_mode(self, x, constructed, call):
        import flax.linen as nn

        m = nn.BatchNorm(**self._kwargs, use_running_average=constructed)
        kwargs = {} if call is None else {"use_running_average": call}
        y, _ = m.apply(self.variables, self._x(x), mutable=["batch_stats"], **kwargs)  # this layer's state
        return np.asarray(y, np.float64)

    @with_x64
    def forward_masked(self, x, mask, training):
        y, updates = self.module.apply(self.variables, self._x(x), use_running_average=not training,
                                       mask=self._channel_mask(mask), mutable=["batch_stats"])
        self.variables = {**self.variables, **updates}
        return np.asarray(y, np.float64)

    def _grads(self, xj, dyj, training):
        """jax.grad of sum(y * dy) w.r.t. (params, x); the batch_stats update is returned by apply and dropped."""
        dp, dx = shared_jit(_grads, 2)(self.module, bool(training), self.variables.get("params", {}),
                                 self.variables["batch_stats"], xj, dyj)
        return dx, dp.__getitem__

    def _frozen_step(self, idiom, xj, dyj, lr):
        """One optax SGD step on loss = sum(y * dy) with the idiom's apply() arguments."""
        import optax

        jax, jnp = self.jax, self.jnp
        m = self.module
        recipe = self.freeze_recipe(idiom)
        use_ra, mutable = recipe.use_running_average, recipe.mutable
        params, stats = self.variables["params"], self.variables["batch_stats"]

        def loss(p):
            out = m.apply({"params": p, "batch_stats": stats}, xj, use_running_average=use_ra, mutable=mutable)
            y, updates = out if mutable else (out, {})
            return jnp.sum(y * dyj), (y, updates)

        (_, (y, updates)), grads = jax.value_and_grad(loss, has_aux=True)(params)
        tx = optax.sgd(lr)
        if recipe.mask_params:  # freeze scale/bias in the optimizer only
            tx = optax.masked(tx, jax.tree_util.tree_map(lambda _: False, params))
            tx = optax.chain(tx, optax.masked(optax.set_to_zero(), jax.tree_util.tree_map(lambda _: True, params)))
        steps, _ = tx.update(grads, tx.init(params), params)
        new_params = optax.apply_updates(params, steps)
        self.variables = {"params": new_params, "batch_stats": updates.get("batch_stats", stats)}
        return y

    def snippet(self):
        return ("import flax.linen as nn, jax, jax.numpy as jnp\n"
                f"bn = nn.BatchNorm({self._snippet_kwargs()})\n"
                "variables = bn.init(jax.random.PRNGKey(0), x, use_running_average=True)\n"
                "y, updates = bn.apply(variables, x, use_running_average=False, mutable=['batch_stats'])")


# Jitted through shared_jit (the module and the mode static), so layers with the same arguments share a program.
def _init(m, key, x0):
    return m.init(key, x0, use_running_average=True)


def _train_apply(m, v, x):
    return m.apply(v, x, use_running_average=False, mutable=["batch_stats"])


def _infer_apply(m, v, x):
    return m.apply(v, x, use_running_average=True)


def _grads(m, training, params, stats, xj, dyj):
    """jax.grad of sum(y * dy) w.r.t. (params, x); the batch_stats update is returned by apply and dropped."""
    import jax
    import jax.numpy as jnp

    def loss(p, xj):
        out = m.apply({"params": p, "batch_stats": stats}, xj, use_running_average=not training,
                      mutable=["batch_stats"] if training else False)
        y = out[0] if training else out
        return jnp.sum(y * dyj)

    return jax.grad(loss, argnums=(0, 1))(params, xj)
