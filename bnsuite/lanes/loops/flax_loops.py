"""Flax linen's training loops around BatchNorm as a typical training step writes them: gradients of the params, the
batch_stats collection returned by apply(..., mutable=["batch_stats"]) and kept by the loop (flax's TrainState holds
params and the optimizer state; batch_stats are the user's extra field), gradient accumulation with optax.MultiSteps,
and a weight EMA with optax.ema over the params (the typical loop) or over params AND batch_stats.

Sources are the installed optax (optax/transforms/_accumulation.py: ema, MultiSteps) and flax
(flax/training/train_state.py, flax/linen/normalization.py).
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.lanes.loops import AccumulationRule, AccumulationRun, AveragingRule, AveragingRun, TrainingLoops

_ACC = "optax/transforms/_accumulation.py"
_TS = "flax/training/train_state.py"
_BN = "flax/linen/normalization.py"
EMA_DECAY = 0.5  # far from the usual 0.999 so that T = 3 steps give an average distinct from every snapshot


class FlaxLinenLoops(TrainingLoops):
    accumulation = {
        "optax_multisteps": Cited(
            AccumulationRule("every-micro-batch"),
            f"{_BN}: BatchNorm.__call__ writes ra_mean/ra_var into batch_stats on every apply with "
            "use_running_average=False and mutable=['batch_stats'], and the loop keeps what apply returns; "
            f"{_ACC}: MultiSteps(every_k_schedule=k, use_grad_mean=True) returns zero updates for k - 1 mini-steps "
            "and the inner optimizer's update of the mean gradient on the k-th"),
    }
    averaging = {
        "optax_ema_params": Cited(
            AveragingRule("ema-debiased", "live", decay=EMA_DECAY),
            f"{_ACC}: ema(decay, debias=True) keeps decay * ema + (1 - decay) * t from zeros and returns it divided "
            f"by 1 - decay^count, for the tree it is given; {_TS}: TrainState holds params (apply_gradients) and no "
            "batch_stats, so the typical loop averages params only and evaluates with the live batch_stats"),
        "optax_ema_params_and_batch_stats": Cited(
            AveragingRule("ema-debiased", "averaged", decay=EMA_DECAY),
            f"{_ACC}: ema averages every leaf of the tree it is given; here {{'params', 'batch_stats'}}"),
    }

    @staticmethod
    def _loop(adapter_cls, spec, state, tx):
        """The adapter's layer loaded with `state`, and one jitted training step (one compilation per batch shape):
        (params, batch_stats, opt_state, x, dy) -> the same after the step."""
        import jax
        import optax

        bn = adapter_cls(spec)
        bn.set_state(state)
        module = bn.module

        def loss(params, stats, x, dy):
            y, upd = module.apply({"params": params, "batch_stats": stats}, x, use_running_average=False,
                                  mutable=["batch_stats"])
            return (y * dy).sum() / x.shape[0], upd["batch_stats"]

        def step(params, stats, opt_state, x, dy):
            (_, stats), g = jax.value_and_grad(loss, has_aux=True)(params, stats, x, dy)
            updates, opt_state = tx.update(g, opt_state, params)
            return optax.apply_updates(params, updates), stats, opt_state

        return bn, jax.jit(step)

    @staticmethod
    def _read(bn, params, stats):
        bn.variables = {**bn.variables, "params": params, "batch_stats": stats}
        return bn.get_state()

    @classmethod
    def _train(cls, adapter_cls, spec, state, pairs, tx, after_step=None):
        bn, step = cls._loop(adapter_cls, spec, state, tx)
        params, stats = bn.variables["params"], bn.variables["batch_stats"]
        opt_state = tx.init(params)
        for x, dy in pairs:
            params, stats, opt_state = step(params, stats, opt_state, x.astype(spec.dtype), dy.astype(spec.dtype))
            if after_step is not None:
                after_step(params, stats)
        return bn, params, stats

    @classmethod
    def accumulate(cls, adapter_cls, idiom, spec, state, micro_batches, cotangents, lr):
        import optax

        if idiom not in cls.accumulation:
            raise KeyError(idiom)
        k = len(micro_batches)
        tx = optax.MultiSteps(optax.sgd(lr), every_k_schedule=k)
        bn, params, stats = cls._train(adapter_cls, spec, state, list(zip(micro_batches, cotangents)), tx)
        acc = cls._read(bn, params, stats)
        pair = [(np.concatenate(micro_batches), np.concatenate(cotangents))]
        bn, params, stats = cls._train(adapter_cls, spec, state, pair, optax.sgd(lr))
        snippet = (f"tx = optax.MultiSteps(optax.sgd({lr}), every_k_schedule={k})\nfor x, dy in micro_batches:\n"
                   "    (loss, batch_stats), g = grad(params, batch_stats, x, dy)  # mutable=['batch_stats']\n"
                   "    updates, opt_state = tx.update(g, opt_state, params); params = optax.apply_updates(...)")
        return AccumulationRun(acc, cls._read(bn, params, stats), snippet)

    @classmethod
    def average(cls, adapter_cls, idiom, spec, state, batches, cotangents, lr):
        import optax

        with_stats = {"optax_ema_params": False, "optax_ema_params_and_batch_stats": True}[idiom]
        ema = optax.ema(EMA_DECAY, debias=True)
        held: dict = {}

        def after_step(params, stats):
            tree = {"params": params, "batch_stats": stats} if with_stats else {"params": params}
            held.setdefault("state", ema.init(tree))
            held["avg"], held["state"] = ema.update(tree, held["state"])
            held["live"] = (params, stats)

        bn, params, stats = cls._train(adapter_cls, spec, state, list(zip(batches, cotangents)), optax.sgd(lr),
                                       after_step)
        live = cls._read(bn, params, stats)
        averaged = cls._read(bn, held["avg"]["params"], held["avg"]["batch_stats"] if with_stats else stats)
        snippet = (f"ema = optax.ema({EMA_DECAY}, debias=True)\n# after each step:\n"
                   + ("tree = {'params': params, 'batch_stats': batch_stats}\n" if with_stats else
                      "tree = {'params': params}  # evaluated with the live batch_stats\n")
                   + "avg, ema_state = ema.update(tree, ema_state)")
        return AveragingRun(averaged, live, snippet)


_NNX_BN = "flax/nnx/nn/normalization.py"
_NNX_OPT = "flax/nnx/training/optimizer.py"


_NNX_MULTISTEPS = (f"{_NNX_BN}: BatchNorm.__call__ with use_running_average=False assigns self.mean / self.var on "
                   "every call, and nnx.grad propagates that update into the model (flax/nnx/transforms/autodiff.py); "
                   f"{_ACC}: MultiSteps(every_k_schedule=k) applies the mean gradient on the k-th mini-step only; "
                   f"{_NNX_OPT}: Optimizer.update applies the transformation to the wrt=nnx.Param state only")


class FlaxNnxLoops(TrainingLoops):
    """flax.nnx's loops: nnx.Optimizer(model, tx, wrt=nnx.Param) steps, gradients by nnx.grad (which writes the
    BatchStat updates of the forward pass back into the model), gradient accumulation with optax.MultiSteps and a
    weight EMA with optax.ema over the Param state (the typical loop) or over Param AND BatchStat state."""

    accumulation = {"optax_multisteps": Cited(AccumulationRule("every-micro-batch"), _NNX_MULTISTEPS)}
    averaging = {
        "optax_ema_params": Cited(AveragingRule("ema-debiased", "live", decay=EMA_DECAY),
                                  f"{_ACC}: ema(decay, debias=True) over the tree it is given, here nnx.state(model, "
                                  "nnx.Param); the averaged copy (nnx.update of a clone) keeps the live model's "
                                  "BatchStats"),
        "optax_ema_params_and_batch_stats": Cited(AveragingRule("ema-debiased", "averaged", decay=EMA_DECAY),
                                                  f"{_ACC}: ema averages every leaf of nnx.state(model, nnx.Param, "
                                                  "nnx.BatchStat)"),
    }

    @staticmethod
    def _train(adapter_cls, spec, state, pairs, tx, after_step=None):
        """The adapter's module loaded with `state`, trained by one jitted nnx step per (x, dy)."""
        import jax.numpy as jnp
        from flax import nnx

        from bnsuite.adapters.flax_common import optimizer_update

        bn = adapter_cls(spec)
        bn.set_state(state)
        opt = nnx.Optimizer(bn.bn, tx, wrt=nnx.Param)

        @nnx.jit
        def step(model, opt, x, dy):
            loss = lambda m: jnp.sum(m(x, use_running_average=False) * dy) / x.shape[0]
            optimizer_update(opt, model, nnx.grad(loss)(model))

        for x, dy in pairs:
            step(bn.bn, opt, bn._x(x), bn._x(dy))
            if after_step is not None:
                after_step(bn.bn)
        return bn

    @classmethod
    def accumulate(cls, adapter_cls, idiom, spec, state, micro_batches, cotangents, lr):
        import optax

        if idiom not in cls.accumulation:
            raise KeyError(idiom)
        k = len(micro_batches)
        acc = cls._train(adapter_cls, spec, state, list(zip(micro_batches, cotangents)),
                         optax.MultiSteps(optax.sgd(lr), every_k_schedule=k))
        large = cls._train(adapter_cls, spec, state, [(np.concatenate(micro_batches), np.concatenate(cotangents))],
                           optax.sgd(lr))
        snippet = (f"opt = nnx.Optimizer(model, optax.MultiSteps(optax.sgd({lr}), every_k_schedule={k}), "
                   "wrt=nnx.Param)\nfor x, dy in micro_batches:\n"
                   "    opt.update(model, nnx.grad(loss)(model))  # loss calls model(x, use_running_average=False)")
        return AccumulationRun(acc.get_state(), large.get_state(), snippet)

    @classmethod
    def average(cls, adapter_cls, idiom, spec, state, batches, cotangents, lr):
        import optax
        from flax import nnx

        with_stats = {"optax_ema_params": False, "optax_ema_params_and_batch_stats": True}[idiom]
        ema = optax.ema(EMA_DECAY, debias=True)
        what = (nnx.Param, nnx.BatchStat) if with_stats else (nnx.Param,)
        held: dict = {}

        def after_step(model):
            tree = nnx.state(model, *what)
            tree = tree if len(what) == 1 else nnx.merge_state(*tree)
            held.setdefault("state", ema.init(tree))
            held["avg"], held["state"] = ema.update(tree, held["state"])

        bn = cls._train(adapter_cls, spec, state, list(zip(batches, cotangents)), optax.sgd(lr), after_step)
        live = bn.get_state()
        averaged = nnx.clone(bn.bn)
        nnx.update(averaged, held["avg"])
        bn.bn = bn._bn_module = averaged  # read the averaged copy through the adapter
        snippet = (f"ema = optax.ema({EMA_DECAY}, debias=True)\n# after each step:\n"
                   f"tree = nnx.state(model, {', '.join('nnx.' + w.__name__ for w in what)})\n"
                   "avg, ema_state = ema.update(tree, ema_state); nnx.update(nnx.clone(model), avg)")
        return AveragingRun(bn.get_state(), live, snippet)
