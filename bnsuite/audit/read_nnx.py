"""Read every ``flax.nnx.BatchNorm`` of an nnx model in the suite's canonical terms, and run it in inference mode.

An nnx model is its own state: each BatchNorm holds its hyperparameters, its ``use_running_average`` (set by
``Module.eval()`` / ``Module.train()``, flax/nnx/module.py) and its BatchStat and Param variables. With an input the
layers come in call order (one call of a copy of the model, nnx.clone, so the model's own statistics stay as they
are), else in the graph's order (nnx.iter_graph).
"""

from __future__ import annotations

import numpy as np

from bnsuite.audit.facts import BNInfo, _canonical, _f64


def is_nnx(model) -> bool:
    import sys

    return "flax.nnx" in sys.modules and isinstance(model, sys.modules["flax.nnx"].Module)


def _bns(model):
    from flax import nnx

    return [("/".join(str(p) for p in path), m) for path, m in nnx.iter_graph(model) if isinstance(m, nnx.BatchNorm)]


def _call_order(model, x) -> list[str]:
    """Paths of the BatchNorm modules in the order one call of a copy of `model` reaches them."""
    from flax import nnx

    twin = nnx.clone(model)
    path_of = {id(m): p for p, m in _bns(twin)}
    order: list[str] = []
    original = nnx.BatchNorm.__call__

    def recording(self, *args, **kwargs):
        order.append(path_of.get(id(self)))
        return original(self, *args, **kwargs)

    nnx.BatchNorm.__call__ = recording
    try:
        twin(np.asarray(x))
    finally:
        nnx.BatchNorm.__call__ = original
    return [p for p in dict.fromkeys(order) if p is not None]


def read_nnx(model, x=None) -> list[BNInfo]:
    from bnsuite.adapters.flax_nnx import FlaxNnx

    decl = FlaxNnx.declare()
    bns = _bns(model)
    if x is not None and bns:
        by_path = dict(bns)
        seen = _call_order(model, x)
        bns = [(p, by_path[p]) for p in seen if p in by_path] + [(p, m) for p, m in bns if p not in seen]
    out = []
    for path, m in bns:
        value = lambda v: None if v is None else _f64(np.asarray(v[...] if hasattr(v, "__getitem__") else v))
        ura = m.use_running_average
        axis = m.axis if isinstance(m.axis, int) else m.axis[0]
        out.append(BNInfo(
            name=path, type="nnx.BatchNorm", framework="flax-nnx", channels=int(m.num_features),
            eps=float(m.epsilon), momentum=_canonical(decl.momentum_weights.value, float(m.momentum)),
            momentum_native=float(m.momentum), momentum_weights=decl.momentum_weights.value,
            channel_axis=int(axis) if axis < 0 else int(axis) - 4, estimator=decl.estimator_for("default"),
            mode="follows the call" if ura is None else ("inference" if ura else "training"), tracking=True,
            # The optimizer's wrt filter, not the model, says what trains; nnx has no per-layer trainable flag.
            frozen=False, stats_still=bool(ura), dtype=str(np.dtype(m.param_dtype)),
            mean=value(m.mean), var=value(m.var), scale=value(getattr(m, "scale", None)),
            offset=value(getattr(m, "bias", None))))
    return out


def infer_nnx(model, x):
    """The model's output in eval mode; each module's use_running_average is put back afterwards."""
    from flax import nnx

    saved = [(m, m.use_running_average) for _, m in nnx.iter_graph(model) if hasattr(m, "use_running_average")]
    model.eval()
    try:
        return model(np.asarray(x))
    finally:
        for m, ura in saved:
            m.use_running_average = ura


def nnx_fan_ins(model) -> list[int]:
    from flax import nnx

    return [int(np.prod(m.kernel.shape[:-1])) for _, m in nnx.iter_graph(model)
            if isinstance(m, (nnx.Conv, nnx.Linear))]
