"""Read every BatchNorm of a torch, Keras (3 or tf_keras, the V1 layer too) or Flax linen model in the suite's
canonical terms; flax.nnx models and TF1 graphs have their readers in read_nnx.py and read_tf1.py, dispatched here.

One reader for the audit, the diff and the real-architecture suites. The framework facts (default eps, which term
momentum weights, the running-variance estimator per code path) come from the adapters' declarations, their one home.
A model is a ``torch.nn.Module``, a ``keras.Model`` / ``tf_keras.Model``, or ``(flax_module, variables[, kwargs])``
(a Flax model also needs an input ``x`` to trace its BatchNorm calls).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from bnsuite.audit.facts import BNInfo, ReadError, _canonical, _f64  # noqa: F401  (BNInfo, ReadError: re-exported)


# -- detection -------------------------------------------------------------------------------------------------------
def _keras_modules(model):
    """The Keras packages `model` belongs to: ("keras", module) or ("tf_keras", module), else None."""
    for name in ("keras", "tf_keras"):
        if name in sys.modules:
            K = sys.modules[name]
            if isinstance(model, K.Model):
                return name, K
    return None


def detect(model) -> str:
    """"keras", "tf_keras", "torch" or "flax"; ReadError for anything else (Keras first: on the torch backend a Keras
    model is a torch.nn.Module too)."""
    k = _keras_modules(model)
    if k is not None:
        return k[0]
    if "torch" in sys.modules and isinstance(model, sys.modules["torch"].nn.Module):
        return "torch"
    from bnsuite.audit.read_nnx import is_nnx
    from bnsuite.audit.read_tf1 import is_tf1_graph

    if is_nnx(model):
        return "flax-nnx"
    if is_tf1_graph(model):
        return "tf1-graph"
    if isinstance(model, tuple) and len(model) in (2, 3) and "flax" in sys.modules:
        import flax.linen as nn

        if isinstance(model[0], nn.Module):
            return "flax"
    raise ReadError(f"not a model: {type(model).__module__}.{type(model).__qualname__} (expected a torch.nn.Module, "
                    "a keras.Model or tf_keras.Model, a flax.nnx.Module, a (flax.linen.Module, variables[, "
                    "apply_kwargs]) tuple, or a tf.compat.v1.Session holding a TF1 graph)")


# -- torch -----------------------------------------------------------------------------------------------------------
def read_torch(model, x=None) -> list[BNInfo]:
    """BatchNorm modules in execution order where `x` is given (a forward in the current mode on a copy of the
    state), else in registration order."""
    import torch

    from bnsuite.adapters.torch_bn import TorchBatchNorm

    decl = TorchBatchNorm.declare()
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if x is not None and bns:
        order: list = []
        hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: order.append(n)) for n, m in bns]
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        try:
            with torch.no_grad():
                model(torch.as_tensor(np.asarray(x), dtype=_torch_dtype(model)))
        finally:
            for h in hooks:
                h.remove()
            model.load_state_dict(saved)
        by_name = dict(bns)
        seen = list(dict.fromkeys(order))
        bns = [(n, by_name[n]) for n in seen] + [(n, m) for n, m in bns if n not in seen]
    out = []
    for name, m in bns:
        params = [p for p in (m.weight, m.bias) if p is not None]
        frozen = bool(params) and not any(p.requires_grad for p in params)
        tracking = bool(m.track_running_stats and m.running_mean is not None)
        out.append(BNInfo(
            name=name, type=type(m).__name__, framework="torch", channels=int(m.num_features), eps=float(m.eps),
            momentum=None if m.momentum is None else float(m.momentum),
            momentum_native=None if m.momentum is None else float(m.momentum),
            momentum_weights=decl.momentum_weights.value, channel_axis=1, estimator=decl.estimator_for("default"),
            mode="training" if m.training else "inference", tracking=tracking, frozen=frozen,
            # torch updates the running statistics in every training-mode forward, whatever requires_grad says.
            stats_still=not (m.training and tracking) or m.momentum == 0,
            dtype=str((m.weight if m.weight is not None else m.running_mean).dtype).removeprefix("torch.")
            if (m.weight is not None or m.running_mean is not None) else "float32",
            mean=_f64(m.running_mean.detach().cpu().numpy()) if m.running_mean is not None else None,
            var=_f64(m.running_var.detach().cpu().numpy()) if m.running_var is not None else None,
            scale=_f64(m.weight.detach().cpu().numpy()) if m.weight is not None else None,
            offset=_f64(m.bias.detach().cpu().numpy()) if m.bias is not None else None))
    return out


def _torch_dtype(model):
    p = next(iter(model.parameters()), None)
    import torch

    return p.dtype if p is not None else torch.float32


# -- keras -----------------------------------------------------------------------------------------------------------
def _keras_layers(model):
    """Every layer of a (possibly nested) Keras model, depth first, in model.layers order."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers") and layer is not model:
            yield from _keras_layers(layer)


def read_keras(model, x=None) -> list[BNInfo]:
    kind, K = _keras_modules(model)
    if kind == "keras":
        from bnsuite.adapters.keras3 import KerasJax, KerasTensorFlow, KerasTorch

        decls = {True: {c.backend: c for c in (KerasTensorFlow, KerasJax, KerasTorch)}[K.backend.backend()].declare()}
        bn_class = K.layers.BatchNormalization
    else:
        from tf_keras.src.layers.normalization.batch_normalization import BatchNormalizationBase

        from bnsuite.adapters.tf1 import Tf1Keras
        from bnsuite.adapters.tf_keras_v2 import TfKerasV2

        # The TF2 layer and the TF1 one (tf.compat.v1.keras.layers.BatchNormalization, _USE_V2_BEHAVIOR False)
        # share BatchNormalizationBase and differ in what trainable=False means; keyed by _USE_V2_BEHAVIOR.
        decls = {True: TfKerasV2.declare(), False: Tf1Keras.declare()}
        bn_class = BatchNormalizationBase
    out = []
    for layer in _keras_layers(model):
        if not isinstance(layer, bn_class):
            continue
        v2 = bool(getattr(layer, "_USE_V2_BEHAVIOR", True))
        decl = decls[v2]
        w = {v.path.rsplit("/", 1)[-1] if hasattr(v, "path") else v.name.rsplit("/", 1)[-1].split(":")[0]: v
             for v in layer.weights}
        get = lambda key: _f64(K.ops.convert_to_numpy(w[key])) if kind == "keras" and key in w else \
            (_f64(K.backend.get_value(w[key])) if key in w else None)
        axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) and len(layer.axis) == 1 else layer.axis
        rank = len(layer.input.shape) if _has_input(layer) else 4
        axis = int(axis) - rank if isinstance(axis, int) and axis >= 0 else axis
        code_path = "default" if kind == "keras" else ("fused" if getattr(layer, "fused", False) else "non-fused")
        # What fit() does to a non-trainable layer, from the declaration: Keras 3 and the TF2 tf_keras layer run it
        # in inference mode and keep its statistics still; the TF1 layer normalizes with batch statistics.
        frozen = not layer.trainable
        fit = decl.freeze["trainable_false_fit"].value
        mode = "follows the call" if not frozen else \
            "inference (trainable=False)" if fit.normalizes_with == "running" else \
            "training in fit() (V1 layer: trainable=False keeps batch statistics)"
        mean = get("moving_mean")
        out.append(BNInfo(
            name=layer.name, type=type(layer).__name__ + ("" if v2 else " (V1)"), framework=kind,
            channels=int(mean.shape[0]) if mean is not None else -1, eps=float(layer.epsilon),
            momentum=_canonical(decl.momentum_weights.value, float(layer.momentum)),
            momentum_native=float(layer.momentum), momentum_weights=decl.momentum_weights.value,
            channel_axis=int(axis) if isinstance(axis, int) else -1, estimator=decl.estimator_for(code_path),
            mode=mode, tracking=True, frozen=frozen, stats_still=frozen and not fit.running_stats_update, dtype=str(getattr(layer, "variable_dtype", None) or layer.dtype),
            mean=mean, var=get("moving_variance"), scale=get("gamma"), offset=get("beta")))
    return out


def _has_input(layer) -> bool:
    try:
        return layer.input is not None
    except Exception:  # a layer never called in a functional graph has no input
        return False


# -- flax ------------------------------------------------------------------------------------------------------------
def read_flax(model, x=None) -> list[BNInfo]:
    """Trace one call of the module (its apply kwargs as given) and read each BatchNorm it calls, in call order."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax import traverse_util

    from bnsuite.adapters.flax_linen import FlaxLinen

    module, variables = model[0], model[1]
    kwargs = dict(model[2]) if len(model) == 3 else {}
    if x is None:
        raise ReadError("flax: pass an input (x) so the BatchNorm calls can be traced (a linen module holds no "
                        "shapes)")
    decl = FlaxLinen.declare()
    calls: list = []

    def interceptor(next_fun, args, kw, context):
        m = context.module
        if isinstance(m, nn.BatchNorm) and context.method_name == "__call__" and m.path not in [c[0] for c in calls]:
            ura = kw.get("use_running_average", m.use_running_average)
            calls.append((m.path, m, ura))
        return next_fun(*args, **kw)

    kwargs.pop("mutable", None)
    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda v, xx: module.apply(v, xx, mutable=True, **kwargs), variables,
                       jnp.asarray(np.asarray(x)))
    params = traverse_util.flatten_dict(dict(variables.get("params", {})))
    stats = traverse_util.flatten_dict(dict(variables.get("batch_stats", {})))
    out = []
    for path, m, ura in calls:
        get = lambda coll, leaf: _f64(coll.get((*path, leaf)))
        mean = get(stats, "mean")
        scale = get(params, "scale")
        channels = int(mean.shape[0]) if mean is not None else (int(scale.shape[0]) if scale is not None else -1)
        axis = m.axis if isinstance(m.axis, int) else m.axis[0]
        out.append(BNInfo(
            name="/".join(path), type=type(m).__name__, framework="flax", channels=channels, eps=float(m.epsilon),
            momentum=_canonical(decl.momentum_weights.value, float(m.momentum)), momentum_native=float(m.momentum),
            momentum_weights=decl.momentum_weights.value, channel_axis=int(axis) if axis < 0 else int(axis) - 4,
            estimator=decl.estimator_for("default"), mode="inference" if ura else "training", tracking=True,
            frozen=False, stats_still=bool(ura), dtype=str(np.dtype(m.param_dtype)), mean=mean,
            var=get(stats, "var"), scale=scale, offset=get(params, "bias")))
    return out


def read(model: Any, x=None, framework: str | None = None) -> list[BNInfo]:
    """Every BatchNorm of `model` (ReadError where it is not a model)."""
    from bnsuite.audit.read_nnx import read_nnx
    from bnsuite.audit.read_tf1 import read_tf1_graph

    readers = {"torch": read_torch, "keras": read_keras, "tf_keras": read_keras, "flax": read_flax,
               "flax-nnx": read_nnx, "tf1-graph": read_tf1_graph}
    fw = framework or detect(model)
    return readers[fw](model, x)
