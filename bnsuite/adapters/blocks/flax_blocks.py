"""Flax blocks, linen and NNX: Dense/Linear, BatchNorm, Dropout and the activations, trained with optax.sgd.

Layouts: a flax kernel is (in, units), the transpose of the canonical (units, in). BatchNorm momentum weights the
OLD value in flax, so it receives 1 - canonical. Dropout draws from a ``jax.random.key(seed)``.
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, Unsupported
from bnsuite.adapters.blocks import BlockDeclaration, Blocks
from bnsuite.adapters.flax_common import as_jax, optimizer_update

_OPTAX = "optax/losses/_classification.py"

LINEN_DECLARATION = BlockDeclaration(
    dropout_scaling=Cited("inverted", "flax/linen/stochastic.py: Dropout.__call__, keep_prob = 1.0 - self.rate; "
                                      "lax.select(mask, inputs / keep_prob, zeros); deterministic returns inputs"),
    bce_losses=Cited({"optax.sigmoid_binary_cross_entropy": "logits"},
                     f"{_OPTAX}: sigmoid_binary_cross_entropy(logits, labels) 'Computes element-wise sigmoid cross "
                     "entropy given logits'; optax has no binary cross-entropy on probabilities (a hand-written "
                     "-mean(t log p + (1-t) log(1-p)) is NaN at p = 1, where a one-unit softmax always is)"),
)
NNX_DECLARATION = BlockDeclaration(
    dropout_scaling=Cited("inverted", "flax/nnx/nn/stochastic.py: Dropout.__call__, keep_prob = 1.0 - self.rate; "
                                      "lax.select(mask, inputs / keep_prob, zeros); deterministic returns inputs"),
    bce_losses=LINEN_DECLARATION.bce_losses,
)


def _loss(name: str, y, t):
    import jax.numpy as jnp
    import optax

    if name == "optax.sigmoid_binary_cross_entropy":
        return jnp.mean(optax.sigmoid_binary_cross_entropy(y, t))
    raise Unsupported(f"flax: no loss {name!r}")


def _linen_module(ops, rate, eps, momentum, dtype):
    import jax
    import flax.linen as nn

    class Relu(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.relu(x)

    class Sigmoid(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.sigmoid(x)

    class Softmax(nn.Module):
        axis: int

        @nn.compact
        def __call__(self, x):
            return jax.nn.softmax(x, axis=self.axis)

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x, training: bool):
            for i, op in enumerate(ops):
                if op[0] == "dense":
                    x = nn.Dense(op[1], dtype=dtype, param_dtype=dtype, name="dense")(x)
                elif op[0] == "bn":
                    x = nn.BatchNorm(use_running_average=not training, momentum=1.0 - momentum, epsilon=eps,
                                     dtype=dtype, param_dtype=dtype, name="bn")(x)
                elif op[0] == "relu":
                    x = Relu(name=f"relu_{i}")(x)
                elif op[0] == "sigmoid":
                    x = Sigmoid(name=f"sigmoid_{i}")(x)
                elif op[0] == "softmax":
                    x = Softmax(op[1], name=f"softmax_{i}")(x)
                elif op[0] == "dropout":
                    x = nn.Dropout(rate, deterministic=not training, name=f"dropout_{i}")(x)
            return x

    return Block()


def _names(ops):
    return ["dense" if op[0] == "dense" else "bn" if op[0] == "bn" else f"{op[0]}_{i}" for i, op in enumerate(ops)]


def _unset(key, shape, dtype):
    """Zeros for a kernel that _load overwrites: no random-number program per kernel shape."""
    return as_jax(np.zeros(shape), dtype)


class _FlaxBlocks(Blocks):
    """Builds the block (`_build`) in the spec's dtype `self.dt`, then loads the canonical weights (`_load`)."""

    def __init__(self, spec, weights):
        super().__init__(spec, weights)
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp, self.dt = jax, jnp, jnp.dtype(spec.dtype)
        self._build(spec)
        self._load(weights)


class FlaxLinenBlocks(_FlaxBlocks):
    declaration = LINEN_DECLARATION

    def _build(self, spec):
        jax = self.jax
        self.module = _linen_module(spec.ops, spec.rate, spec.eps, spec.momentum, self.dt)
        # _load sets every variable: their shapes come from an abstract init (no random-number program per shape).
        x0 = jax.ShapeDtypeStruct((2, spec.in_features), self.dt)
        shapes = jax.eval_shape(lambda x: self.module.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                                                           x, training=False), x0)
        self.variables = jax.tree_util.tree_map(lambda a: _unset(None, a.shape, a.dtype), dict(shapes))

    def _load(self, w):
        params = {k: dict(v) for k, v in self.variables["params"].items()}
        stats = {k: dict(v) for k, v in self.variables.get("batch_stats", {}).items()}
        if "dense" in params:
            params["dense"] = {"kernel": as_jax(w["dense.kernel"].T, self.dt),
                               "bias": as_jax(w["dense.bias"], self.dt)}
        if "bn" in params:
            params["bn"] = {"scale": as_jax(w["bn.scale"], self.dt), "bias": as_jax(w["bn.offset"], self.dt)}
            stats["bn"] = {"mean": as_jax(w["bn.mean"], self.dt), "var": as_jax(w["bn.var"], self.dt)}
        self.variables = {"params": params, **({"batch_stats": stats} if stats else {})}

    def forward(self, x, training, seed=0):
        from flax import traverse_util

        kw = {"rngs": {"dropout": self.jax.random.key(seed)}} if training else {}
        mutable = ["intermediates"] + (["batch_stats"] if training and "batch_stats" in self.variables else [])
        _, state = self.module.apply(self.variables, as_jax(x, self.dt), training=training,
                                     capture_intermediates=True, mutable=mutable, **kw)
        if "batch_stats" in state:
            self.variables = {**self.variables, "batch_stats": state["batch_stats"]}
        flat = traverse_util.flatten_dict(dict(state["intermediates"]))
        return [np.asarray(flat[(name, "__call__")][0], np.float64) for name in _names(self.spec.ops)]

    def weights(self):
        out = {}
        p, s = self.variables["params"], self.variables.get("batch_stats", {})
        if "dense" in p:
            out["dense.kernel"] = np.asarray(p["dense"]["kernel"], np.float64).T.copy()
            out["dense.bias"] = np.asarray(p["dense"]["bias"], np.float64)
        if "bn" in p:
            out.update({"bn.scale": np.asarray(p["bn"]["scale"], np.float64),
                        "bn.offset": np.asarray(p["bn"]["bias"], np.float64),
                        "bn.mean": np.asarray(s["bn"]["mean"], np.float64),
                        "bn.var": np.asarray(s["bn"]["var"], np.float64)})
        return out

    def sgd_step(self, x, target, loss, lr):
        import optax

        jax = self.jax
        xt, tt = as_jax(x, self.dt), as_jax(target, self.dt)
        rest = {k: v for k, v in self.variables.items() if k != "params"}

        def f(params):
            y = self.module.apply({"params": params, **rest}, xt, training=False)
            return _loss(loss, y, tt)

        value, grads = jax.value_and_grad(f)(self.variables["params"])
        tx = optax.sgd(lr)
        updates, _ = tx.update(grads, tx.init(self.variables["params"]), self.variables["params"])
        self.variables = {**self.variables, "params": optax.apply_updates(self.variables["params"], updates)}
        return float(value)

    def probe_model(self):
        return (self.module, self.variables, {"training": False})


class FlaxNnxBlocks(_FlaxBlocks):
    declaration = NNX_DECLARATION

    def _build(self, spec):
        from flax import nnx

        jax, self.nnx = self.jax, nnx
        rngs = nnx.Rngs(0)
        layers, width = [], spec.in_features
        for op in spec.ops:
            if op[0] == "dense":
                layers.append(nnx.Linear(width, op[1], dtype=self.dt, param_dtype=self.dt, rngs=rngs,
                                         kernel_init=_unset))  # _load sets the kernel
                width = op[1]
            elif op[0] == "bn":
                layers.append(nnx.BatchNorm(width, momentum=1.0 - spec.momentum, epsilon=spec.eps, dtype=self.dt,
                                            param_dtype=self.dt, rngs=rngs))
            elif op[0] == "dropout":
                layers.append(nnx.Dropout(spec.rate, rngs=nnx.Rngs(dropout=0)))
            elif op[0] == "relu":
                layers.append(nnx.relu)
            elif op[0] == "sigmoid":
                layers.append(nnx.sigmoid)
            elif op[0] == "softmax":
                layers.append(lambda h, axis=op[1]: jax.nn.softmax(h, axis=axis))
        self.layers = layers
        self._by = {op[0]: layers[i] for i, op in enumerate(spec.ops)}

    def _load(self, w):
        if "dense" in self._by:
            m = self._by["dense"]
            m.kernel.value = as_jax(w["dense.kernel"].T, self.dt)
            m.bias.value = as_jax(w["dense.bias"], self.dt)
        if "bn" in self._by:
            m = self._by["bn"]
            m.scale.value = as_jax(w["bn.scale"], self.dt)
            m.bias.value = as_jax(w["bn.offset"], self.dt)
            m.mean.value = as_jax(w["bn.mean"], self.dt)
            m.var.value = as_jax(w["bn.var"], self.dt)

    def _run(self, h, training, seed, collect):
        nnx = self.nnx
        outs = []
        for op, layer in zip(self.spec.ops, self.layers):
            if op[0] == "bn":
                h = layer(h, use_running_average=not training)
            elif op[0] == "dropout":
                h = layer(h, deterministic=not training, rngs=nnx.Rngs(dropout=seed))
            else:
                h = layer(h)
            if collect:
                outs.append(np.asarray(h, np.float64))
        return h, outs

    def forward(self, x, training, seed=0):
        return self._run(as_jax(x, self.dt), training, seed, True)[1]

    def weights(self):
        out = {}
        if "dense" in self._by:
            m = self._by["dense"]
            out["dense.kernel"] = np.asarray(m.kernel.value, np.float64).T.copy()
            out["dense.bias"] = np.asarray(m.bias.value, np.float64)
        if "bn" in self._by:
            m = self._by["bn"]
            out.update({"bn.scale": np.asarray(m.scale.value, np.float64),
                        "bn.offset": np.asarray(m.bias.value, np.float64),
                        "bn.mean": np.asarray(m.mean.value, np.float64),
                        "bn.var": np.asarray(m.var.value, np.float64)})
        return out

    def sgd_step(self, x, target, loss, lr):
        import optax

        nnx = self.nnx
        dense = self._by.get("dense")
        if dense is None:
            raise Unsupported("flax-nnx: sgd_step needs a dense layer")
        xt, tt = as_jax(x, self.dt), as_jax(target, self.dt)

        def f(dense_layer):
            h = dense_layer(xt)
            for op, layer in zip(self.spec.ops[1:], self.layers[1:]):
                h = layer(h)
            return _loss(loss, h, tt)

        opt = nnx.Optimizer(dense, optax.sgd(lr), wrt=nnx.Param)
        value, grads = nnx.value_and_grad(f)(dense)
        optimizer_update(opt, dense, grads)
        return float(value)

    def probe_model(self):
        raise Unsupported("bnsuite.probe takes flax.linen (module, variables) pairs, not flax.nnx modules")
