"""Flax NNX adapter: flax.nnx.BatchNorm, a stateful module whose BatchStat variables update in place."""

from __future__ import annotations

import numpy as np

from typing import NamedTuple

from bnsuite.adapters.base import Cited, FreezeFacts, FreezeIdiom, by_version, dtype_name
from bnsuite.adapters.flax_common import (NNX, FlaxAdapter, assign, flax_capabilities, flax_declaration,
                                          optimizer_update, with_x64)
from bnsuite.adapters.mixed_precision import flax_mixed

MODULE = "flax/nnx/module.py"


# State slot -> the nnx.BatchNorm attribute holding it.
NNX_SLOTS = {"scale": "scale", "offset": "bias", "mean": "mean", "var": "var"}


class NnxRecipe(NamedTuple):
    """How an NNX freeze idiom takes the optimizer step, read alike by the lone layer and the networks."""

    eval_mode: bool  # the module is put in eval mode before the step (else in train mode)
    view: bool = False  # the step runs through nnx.view(model, use_running_average=True)
    exclude_bn_params: bool = False  # the optimizer takes every Param except BatchNorm's scale and bias


NNX_IDIOMS = {
    "eval": FreezeIdiom(NnxRecipe(eval_mode=True)),
    "train": FreezeIdiom(NnxRecipe(eval_mode=False)),
    "view_use_running_average": FreezeIdiom(NnxRecipe(eval_mode=False, view=True)),
    "optimizer_excludes_bn_params": FreezeIdiom(NnxRecipe(eval_mode=False, exclude_bn_params=True)),
}


class FlaxNnx(FlaxAdapter):
    id = "flax-nnx"
    capabilities = flax_capabilities("nnx")
    freeze_idioms = NNX_IDIOMS

    @classmethod
    def unavailable_reason(cls):
        """nnx.DiffState, which this adapter's backward and freeze steps use, arrived in flax 0.9 (flax/nnx/__init__.py);
        on an older flax the adapter skips with that reason instead of failing on the missing names."""
        why = super().unavailable_reason()
        if why is None:
            from bnsuite.adapters.base import in_range, installed_version

            version = installed_version("flax")
            if version is not None and in_range(version, "<0.9"):
                return f"flax {version}: the nnx API this adapter uses (nnx.DiffState) arrived in flax 0.9"
        return why

    @classmethod
    def declare(cls):
        return flax_declaration(
            NNX, "flax.nnx", mixed_precision=flax_mixed.declared(nnx=True),
            training_default=Cited("training", f"{NNX}: BatchNorm.__init__(use_running_average: bool | None = False)"),
            batch_stats_inference=Cited("use_running_average=False", f"{NNX}: use_running_average=False "
                                        "normalizes with batch statistics and updates the BatchStat variables"),
            freeze={
                "eval": Cited(FreezeFacts("running", False, True),
                              f"{MODULE}: Module.eval sets use_running_average=True; an Optimizer(wrt=nnx.Param) "
                              "still updates scale/bias"),
                "train": Cited(FreezeFacts("batch", True, True), f"{MODULE}: Module.train sets "
                                                                 "use_running_average=False"),
                "view_use_running_average": by_version(
                    "flax",
                    ("<0.12.4", Cited(FreezeFacts("running", False, True, error="AttributeError"),
                                      "flax/nnx/__init__.py has no `view` before 0.12.4: nnx.view arrived with commit "
                                      "4f5a64c6 'nnx.view, removing train_view and eval_view' (first released in "
                                      "0.12.4)")),
                    (">=0.12.4", Cited(FreezeFacts("running", False, True),
                                       f"{MODULE}: nnx.view(node, use_running_average=True) shares the arrays and "
                                       "sets the attribute on the view"))),
                "optimizer_excludes_bn_params": Cited(
                    FreezeFacts("batch", True, False),
                    "flax/nnx/training/optimizer.py: Optimizer(model, tx, wrt=filter) updates only the state that "
                    "matches wrt; BatchStat is updated by the forward pass"),
            },
        )

    @with_x64
    def __init__(self, spec):
        super().__init__(spec)
        from flax import nnx

        self.nnx = nnx
        with self.jax.default_device(self.device):
            self.bn = self._bn_module = nnx.BatchNorm(spec.num_features, rngs=nnx.Rngs(0), **self._kwargs)

    def _slot(self, name):
        return getattr(self.bn, NNX_SLOTS[name], None)

    def _read(self, var):
        return var[...]

    def _write(self, var, value):
        assign(var, self._put(value, var[...]))

    def _dtype(self, var):
        return dtype_name(var[...].dtype)

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

    @with_x64
    def rebuild_with_axes(self, axes, x_shape):
        # nnx.BatchNorm takes num_features (an int) and an axis; several axes are passed as flax.linen takes them.
        with self.jax.default_device(self.device):
            self.bn = self.nnx.BatchNorm(self.spec.num_features, rngs=self.nnx.Rngs(0),
                                         **{**self._kwargs, "axis": tuple(axes)})

    @with_x64
    def forward_constructed_mode(self, x, constructed, call):
        nnx = self.nnx
        with self.jax.default_device(self.device):
            bn = nnx.BatchNorm(self.spec.num_features, use_running_average=constructed, rngs=nnx.Rngs(0),
                               **self._kwargs)
        nnx.update(bn, nnx.state(self.bn))  # this layer's parameters and statistics
        return np.asarray(bn(self._x(x)) if call is None else bn(self._x(x), use_running_average=call), np.float64)

    @with_x64
    def forward_masked(self, x, mask, training):
        return np.asarray(self.bn(self._x(x), use_running_average=not training, mask=self._channel_mask(mask)),
                          np.float64)

    def _grads(self, xj, dyj, training):
        """nnx.grad of sum(y * dy) w.r.t. the Params and x, on a clone so the BatchStat update is discarded."""
        nnx, jnp = self.nnx, self.jnp
        model = nnx.clone(self.bn)

        def loss(mdl, xj):
            return jnp.sum(mdl(xj, use_running_average=not training) * dyj)

        dparams, dx = nnx.grad(loss, argnums=(nnx.DiffState(0, nnx.Param), 1))(model, xj)
        # Gradients come back as Variables (flax >= 0.11) or VariableStates (earlier, not subscriptable): .value reads both.
        return dx, lambda name: dparams[name].value

    def _frozen_step(self, idiom, xj, dyj, lr):
        """One nnx.Optimizer (optax SGD) step on loss = sum(y * dy) after the idiom."""
        import optax

        nnx, jnp = self.nnx, self.jnp
        bn = self.bn
        recipe = self.freeze_recipe(idiom)
        bn.eval() if recipe.eval_mode else bn.train()
        wrt = nnx.Param
        if recipe.exclude_bn_params:  # the fine-tuning pattern: optimize every Param except BatchNorm's scale and bias
            wrt = nnx.All(nnx.Param, lambda path, value: not any(p in ("scale", "bias") for p in path))
        opt = nnx.Optimizer(bn, optax.sgd(lr), wrt=wrt)
        target = nnx.view(bn, use_running_average=True) if recipe.view else bn

        def loss(model):
            y = model(xj)
            return jnp.sum(y * dyj), y

        (_, y), grads = nnx.value_and_grad(loss, argnums=nnx.DiffState(0, wrt), has_aux=True)(target)
        optimizer_update(opt, bn, grads)
        return y

    def snippet(self):
        return (f"from flax import nnx\nbn = nnx.BatchNorm({self.spec.num_features}, {self._snippet_kwargs()}, "
                "rngs=nnx.Rngs(0))\n"
                "y = bn(x, use_running_average=False)")
