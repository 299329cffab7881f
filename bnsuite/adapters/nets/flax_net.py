"""Flax networks: flax.linen (functional variables, batch_stats collection, optax.sgd) and flax.nnx (stateful
modules, nnx.Optimizer over optax.sgd).

Layout conversions: Flax convolutions are NHWC; a channels-first input is transposed to NHWC on entry. Conv kernel
(kh, kw, in, out) = canonical (out, in, kh, kw).transpose(2, 3, 1, 0); Dense/Linear kernel (in, out) = canonical.T;
BN scale/bias/mean/var = scale/offset/mean/var; momentum = 1 - canonical (Flax weights the OLD value, as
adapters/flax_linen.py and adapters/flax_nnx.py convert it).
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.adapters.flax_common import as_jax, assign, optimizer_update
from bnsuite.adapters.flax_linen import LinenRecipe
from bnsuite.adapters.flax_nnx import NnxRecipe
from bnsuite.adapters.nets import HWIO, Network, bn_names
from bnsuite.adapters.nets.reference_net import plan



def _nhwc_on_device(net, x):
    """Flax convolutions are channels-last: move a channels-first batch, then put it on the network's device."""
    x = np.asarray(x)
    if not net.channels_last:
        x = np.moveaxis(x, 1, -1)
    return as_jax(x, net.dtype, net.device)


def _key(name: str) -> str:
    return name.replace(".", "_")


def _to_flax(name, a):
    if name.endswith(".kernel"):
        return a.transpose(2, 3, 1, 0) if a.ndim == 4 else a.T
    return a


def _from_flax(name, a):
    a = np.asarray(a, np.float64)
    if name.endswith(".kernel"):
        return (a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.T).copy()
    return a.copy()


def _kinds(arch):
    """canonical layer name -> kind, forward order."""
    out = {}
    for op in plan(arch):
        if op[0] in ("conv", "bn", "dense"):
            out[op[1]] = op[0]
        elif op[0] == "block":
            out[f"{op[1]}.bn"], out[f"{op[1]}.conv"] = "bn", "conv"
    return out


_FIELDS = {"conv": (("kernel", "kernel"), ("bias", "bias")), "dense": (("kernel", "kernel"), ("bias", "bias")),
           "bn": (("scale", "scale"), ("offset", "bias"))}
_STATS = (("mean", "mean"), ("var", "var"))


# -- linen --------------------------------------------------------------------------------------------------------------
class LinenNet(Network):
    weight_layout = Cited(HWIO, "flax/linen/linear.py Conv.__call__: kernel_shape = kernel_size + (in_features // "
                                "feature_group_count, features); Dense.__call__: kernel (jnp.shape(inputs)[-1], features)")

    def _build(self, weights, *, dtype, device, eps, momentum):
        import flax.linen as nn
        import jax
        import jax.numpy as jnp

        from bnsuite.adapters.flax_common import jax_device

        self.jax, self.jnp = jax, jnp
        self.device = jax_device(device)
        self.dtype, ops = dtype, self.ops

        class Net(nn.Module):
            @nn.compact
            def __call__(self, x, train: bool):
                h = x
                conv = lambda name, cout, k: nn.Conv(cout, (k, k), padding="SAME", dtype=dtype, param_dtype=dtype,
                                                     name=_key(name))
                bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=1.0 - momentum, epsilon=eps,
                                               dtype=dtype, param_dtype=dtype, name=_key(name))
                for op in ops:
                    if op[0] == "conv":
                        h = conv(op[1], op[3], op[4])(h)
                    elif op[0] == "bn":
                        h = bn(op[1])(h)
                    elif op[0] == "relu":
                        h = nn.relu(h)
                    elif op[0] == "gap":
                        h = h.mean(axis=(1, 2))
                    elif op[0] == "dense":
                        h = nn.Dense(op[3], dtype=dtype, param_dtype=dtype, name=_key(op[1]))(h)
                    elif op[0] == "block":
                        c = conv(f"{op[1]}.conv", op[3], 1)(nn.relu(bn(f"{op[1]}.bn")(h)))
                        h = jnp.concatenate([h, c], axis=-1)
                return h

        self.module = Net()
        kinds = _kinds(self.arch)
        params, stats = {}, {}
        for name, kind in kinds.items():
            params[_key(name)] = {f: as_jax(_to_flax(f"{name}.{c}", weights[f"{name}.{c}"]), dtype)
                                  for c, f in _FIELDS[kind]}
            if kind == "bn":
                stats[_key(name)] = {f: as_jax(weights[f"{name}.{c}"], dtype) for c, f in _STATS}
        self.variables = jax.device_put({"params": params, "batch_stats": stats}, self.device)
        m = self.module
        self._infer = jax.jit(lambda v, x: m.apply(v, x, train=False))
        self._steps = {}

    def _x(self, x):
        return _nhwc_on_device(self, x)

    def forward(self, x, training):
        if training:
            y, upd = self.module.apply(self.variables, self._x(x), train=True, mutable=["batch_stats"])
            self.variables = {**self.variables, **upd}
        else:
            y = self._infer(self.variables, self._x(x))
        return np.asarray(y, np.float64)

    def _make_step(self, lr):
        import optax

        jax, jnp, m = self.jax, self.jnp, self.module
        recipe = self.recipe or LinenRecipe(False, ["batch_stats"])  # no idiom: ordinary training
        mutable, train = recipe.mutable, not recipe.use_running_average
        tx = optax.sgd(lr)
        if recipe.mask_params:  # freeze BN scale/bias in the optimizer only
            bn_keys = {_key(n) for n in bn_names(self.arch)}
            labels = {k: jax.tree_util.tree_map(lambda _: "freeze" if k in bn_keys else "sgd", v)
                      for k, v in self.variables["params"].items()}
            tx = optax.multi_transform({"sgd": optax.sgd(lr), "freeze": optax.set_to_zero()}, labels)

        def step(variables, x, t):
            params, stats = variables["params"], variables["batch_stats"]

            def loss_fn(p):
                out = m.apply({"params": p, "batch_stats": stats}, x, train=train, mutable=mutable)
                y, upd = out if mutable else (out, {})
                return jnp.mean(jnp.square(y - t)), upd

            (loss, upd), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, _ = tx.update(grads, tx.init(params), params)
            return loss, {"params": optax.apply_updates(params, updates),
                          "batch_stats": upd.get("batch_stats", stats)}

        return jax.jit(step)

    def sgd_step(self, x, target, lr):
        if lr not in self._steps:
            self._steps[lr] = self._make_step(lr)
        t = as_jax(target, self.dtype, self.device)
        loss, self.variables = self._steps[lr](self.variables, self._x(x), t)
        return float(loss)

    def get_weights(self):
        out = {}
        p, s = self.variables["params"], self.variables["batch_stats"]
        for name, kind in _kinds(self.arch).items():
            for c, f in _FIELDS[kind]:
                out[f"{name}.{c}"] = _from_flax(f"{name}.{c}", p[_key(name)][f])
            if kind == "bn":
                for c, f in _STATS:
                    out[f"{name}.{c}"] = _from_flax(c, s[_key(name)][f])
        return out

    def native_kernel_shapes(self):
        p = self.variables["params"]
        return {f"{name}.kernel": tuple(p[_key(name)]["kernel"].shape) for name, kind in _kinds(self.arch).items()
                if kind != "bn"}


# -- nnx ----------------------------------------------------------------------------------------------------------------
class NnxNet(Network):
    weight_layout = Cited(HWIO, "flax/nnx/nn/linear.py Conv.__init__: kernel_shape = kernel_size + (in_features // "
                                "feature_group_count, out_features); Linear.__init__: kernel (in_features, out_features)")

    def _build(self, weights, *, dtype, device, eps, momentum):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from bnsuite.adapters.flax_common import jax_device

        self.jax, self.jnp, self.nnx = jax, jnp, nnx
        self.device = jax_device(device)
        self.dtype, ops = dtype, self.ops
        kinds = _kinds(self.arch)

        class Net(nnx.Module):
            def __init__(self, rngs):
                for op in ops:
                    if op[0] == "conv":
                        setattr(self, _key(op[1]), nnx.Conv(op[2], op[3], (op[4], op[4]), padding="SAME", dtype=dtype,
                                                           param_dtype=dtype, rngs=rngs))
                    elif op[0] == "bn":
                        setattr(self, _key(op[1]), nnx.BatchNorm(op[2], momentum=1.0 - momentum, epsilon=eps,
                                                                 dtype=dtype, param_dtype=dtype, rngs=rngs))
                    elif op[0] == "dense":
                        setattr(self, _key(op[1]), nnx.Linear(op[2], op[3], dtype=dtype, param_dtype=dtype,
                                                             rngs=rngs))
                    elif op[0] == "block":
                        setattr(self, _key(f"{op[1]}.bn"), nnx.BatchNorm(op[2], momentum=1.0 - momentum, epsilon=eps,
                                                                         dtype=dtype, param_dtype=dtype, rngs=rngs))
                        setattr(self, _key(f"{op[1]}.conv"), nnx.Conv(op[2], op[3], (1, 1), padding="SAME",
                                                                      dtype=dtype, param_dtype=dtype, rngs=rngs))

            def __call__(self, x, use_running_average=None):
                h = x
                kw = {} if use_running_average is None else {"use_running_average": use_running_average}
                for op in ops:
                    if op[0] in ("conv", "dense"):
                        h = getattr(self, _key(op[1]))(h)
                    elif op[0] == "bn":
                        h = getattr(self, _key(op[1]))(h, **kw)
                    elif op[0] == "relu":
                        h = nnx.relu(h)
                    elif op[0] == "gap":
                        h = h.mean(axis=(1, 2))
                    elif op[0] == "block":
                        a = nnx.relu(getattr(self, _key(f"{op[1]}.bn"))(h, **kw))
                        h = jnp.concatenate([h, getattr(self, _key(f"{op[1]}.conv"))(a)], axis=-1)
                return h

        # Abstract construction (no random initialization: eager init of ~40 layers costs seconds), then every
        # variable gets its canonical value.
        self.model = nnx.eval_shape(lambda: Net(nnx.Rngs(0)))
        n_set = 0
        for name, kind in kinds.items():
            mod = getattr(self.model, _key(name))
            fields = _FIELDS[kind] + (_STATS if kind == "bn" else ())
            for c, f in fields:
                assign(getattr(mod, f), as_jax(_to_flax(f"{name}.{c}", weights[f"{name}.{c}"]), dtype, self.device))
                n_set += 1
        n_vars = len(jax.tree_util.tree_leaves(nnx.state(self.model)))
        if n_vars != n_set:  # a variable left abstract would fail later, obscurely
            raise RuntimeError(f"flax-nnx network: set {n_set} of {n_vars} variables")
        self._kinds = kinds
        self.model.train()

    def _x(self, x):
        return _nhwc_on_device(self, x)

    def forward(self, x, training):
        if training:
            return np.asarray(self.model(self._x(x), use_running_average=False), np.float64)
        # inference changes no state: a jitted pure function of the split state (eager NNX is slow here)
        nnx = self.nnx
        graphdef, state = nnx.split(self.model)
        if getattr(self, "_infer", None) is None:
            self._infer = self.jax.jit(lambda g_state, x: nnx.merge(graphdef, g_state)(x, use_running_average=True))
        return np.asarray(self._infer(state, self._x(x)), np.float64)

    def sgd_step(self, x, target, lr):
        import optax

        nnx, jnp = self.nnx, self.jnp
        model, recipe = self.model, self.recipe or NnxRecipe(eval_mode=False)  # no idiom: ordinary training
        wrt = nnx.Param
        model.eval() if recipe.eval_mode else model.train()
        if recipe.exclude_bn_params:
            bn_keys = {_key(n) for n in bn_names(self.arch)}
            wrt = nnx.All(nnx.Param, lambda path, value: not any(str(p) in bn_keys for p in path))
        opt = nnx.Optimizer(model, optax.sgd(lr), wrt=wrt)
        target_model = nnx.view(model, use_running_average=True) if recipe.view else model
        xj = self._x(x)
        tj = as_jax(target, self.dtype, self.device)

        def loss_fn(m):
            return jnp.mean(jnp.square(m(xj) - tj))

        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt))(target_model)
        optimizer_update(opt, model, grads)
        return float(loss)

    def get_weights(self):
        out = {}
        for name, kind in self._kinds.items():
            mod = getattr(self.model, _key(name))
            for c, f in _FIELDS[kind] + (_STATS if kind == "bn" else ()):
                out[f"{name}.{c}"] = _from_flax(f"{name}.{c}", getattr(mod, f)[...])
        return out

    def native_kernel_shapes(self):
        return {f"{name}.kernel": tuple(getattr(self.model, _key(name)).kernel[...].shape)
                for name, kind in self._kinds.items() if kind != "bn"}


def build_linen(adapter_cls, arch, weights, **kw) -> LinenNet:
    return LinenNet(arch, weights, **kw)


def build_nnx(adapter_cls, arch, weights, **kw) -> NnxNet:
    return NnxNet(arch, weights, **kw)
