"""Read every BatchNorm of a TF1 graph (``tf.compat.v1.layers.batch_normalization`` and the layer classes behind it)
from the graph itself: a graph imported from a checkpoint has no Python layer objects, so the graph is the truth.

A model is a ``tf.compat.v1.Session`` (its graph holds the layers, its variables the values), or
``(session, input_tensor, output_tensor)`` for outputs. What each fact is read from:

* a layer: a ``<scope>/moving_mean`` variable; its calls: the ops under ``<scope>/`` and ``<scope>_<n>/``;
* eps: the ``epsilon`` attribute of the FusedBatchNorm op (in a ``tf.cond`` branch where ``training`` is a tensor),
  else the constant of ``<scope>/batchnorm/add`` (the non-fused path);
* momentum: the update weight of the new statistic is the second factor of ``<scope>/AssignMovingAvg/mul``
  (tf_keras BatchNormalizationBase._assign_moving_average: ``variable.assign_sub((variable - value) * (1 -
  momentum))``), evaluated in the session with every ``training`` predicate fed True;
* mode: the FusedBatchNorm ``is_training`` attribute or the ``moments`` ops of the non-fused path; a ``tf.cond`` on a
  predicate makes it follow that tensor;
* frozen: its gamma and beta are outside the TRAINABLE_VARIABLES collection, which an optimizer's minimize() takes;
* stats still: none of its AssignMovingAvg ops is in UPDATE_OPS, which a train op built the documented way runs
  (tf_keras/src/legacy_tf_layers/normalization.py docstring: "the update ops are placed in tf.GraphKeys.UPDATE_OPS,
  so they need to be executed alongside the train_op").

A live layer object of that graph (``tf.compat.v1.layers.BatchNormalization``) whose ``trainable`` was set to False
after its call is reported too: the graph was built while it was trainable, so nothing was frozen.
"""

from __future__ import annotations

import gc
import re

import numpy as np

from bnsuite.audit.facts import BNInfo, ReadError, _f64

FUSED = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")
CONDS = ("If", "StatelessIf")


def tf1_parts(model):
    """(session, input tensor or None, output tensor or None) of a TF1 graph model."""
    return (model[0], model[1], model[2]) if isinstance(model, tuple) else (model, None, None)


def is_tf1_graph(model) -> bool:
    import sys

    if "tensorflow" not in sys.modules:
        return False
    sess = model[0] if isinstance(model, tuple) and len(model) == 3 else model
    return isinstance(sess, sys.modules["tensorflow"].compat.v1.Session)


def _branch_nodes(graph, op):
    """The NodeDefs of both branches of a tf.cond op."""
    for branch in ("then_branch", "else_branch"):
        yield from graph._get_function(op.get_attr(branch).name).cached_definition.node_def


def _scalar(tf, attr_value):
    return float(tf.make_ndarray(attr_value.tensor)) if attr_value.HasField("tensor") else None


def _calls(graph, scope, scopes):
    """The ops of each call of the layer `scope` (its own name scope and the `scope_<n>` of reuse calls)."""
    pat = re.compile(rf"^{re.escape(scope)}(_\d+)?/")
    by_call: dict[str, list] = {}
    for op in graph.get_operations():
        m = pat.match(op.name)
        if m and (m.group(0)[:-1] == scope or m.group(0)[:-1] not in scopes):  # a layer named scope_<n> is another
            by_call.setdefault(m.group(0), []).append(op)
    return by_call


def _call_facts(tf, graph, ops):
    """(eps, mode, fused, channel_axis, predicate tensors) of one call."""
    eps, modes, fused, axis, preds = None, set(), False, -1, []
    for op in ops:
        if op.type in CONDS and op.inputs[0].dtype == tf.bool:
            preds.append(op.inputs[0])
            for n in _branch_nodes(graph, op):
                if n.op in FUSED:
                    eps, fused = n.attr["epsilon"].f, True
                    axis = 1 if n.attr["data_format"].s.decode().startswith("NC") else -1
        elif op.type in FUSED:
            eps, fused = op.get_attr("epsilon"), True
            axis = 1 if op.get_attr("data_format").decode().startswith("NC") else -1
            modes.add("training" if op.get_attr("is_training") else "inference")
        elif op.type == "Const" and op.name.endswith("batchnorm/add/y"):
            eps = float(tf.make_ndarray(op.get_attr("value")))
        elif op.type == "Mean" and "/moments/" in op.name:
            modes.add("training")
            red = tf.make_ndarray(op.inputs[1].op.get_attr("value")) if op.inputs[1].op.type == "Const" else None
            rank = op.inputs[0].shape.rank
            if red is not None and rank:
                keep = [a for a in range(rank) if a not in set(int(r) % rank for r in np.ravel(red))]
                axis = keep[0] - rank if keep == [rank - 1] else keep[0] if keep else -1
    if preds:
        modes = {"follows " + ", ".join(sorted({p.name for p in preds}))}
    return eps, " + ".join(sorted(modes)) or "inference", fused, axis, preds


def update_weight(sess, tensor, feed) -> float:
    """The value of the factor (1 - momentum) that multiplies (variable - batch statistic) in a moving-average
    update: the weight of the new statistic."""
    return float(sess.run(tensor, feed))


def _live_layers(graph) -> dict:
    """Layer objects of `graph` still alive in this process, by scope name (tf.compat.v1.layers.BatchNormalization
    objects the user kept; the batch_normalization function drops its own)."""
    from tf_keras.src.layers.normalization.batch_normalization import BatchNormalizationBase

    out = {}
    for o in gc.get_objects():
        mean = getattr(o, "moving_mean", None) if isinstance(o, BatchNormalizationBase) else None
        if mean is not None and getattr(mean, "graph", None) is graph:
            out[mean.op.name[: -len("/moving_mean")]] = o
    return out


def read_tf1_graph(model, x=None) -> list[BNInfo]:
    """Every BatchNorm layer of the session's graph, in the order its moving-mean variables were created."""
    import tensorflow as tf

    from bnsuite.adapters.tf1 import Tf1Graph

    v1 = tf.compat.v1
    sess, _, _ = tf1_parts(model)
    graph = sess.graph
    decl = Tf1Graph.declare()
    variables = {v.op.name: v for v in graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)}
    trainable = {v.op.name for v in graph.get_collection(v1.GraphKeys.TRAINABLE_VARIABLES)}
    updates = {op.name if hasattr(op, "type") else op.op.name for op in graph.get_collection(v1.GraphKeys.UPDATE_OPS)}
    scopes = [n[: -len("/moving_mean")] for n in variables if n.endswith("/moving_mean")]
    live = _live_layers(graph) if scopes else {}
    values = sess.run({f"{s}/{k}": variables[f"{s}/{k}"] for s in scopes
                       for k in ("moving_mean", "moving_variance", "gamma", "beta") if f"{s}/{k}" in variables})
    out = []
    for scope in scopes:
        calls = _calls(graph, scope, set(scopes))
        facts = [_call_facts(tf, graph, ops) for ops in calls.values()]
        eps = next((f[0] for f in facts if f[0] is not None), None)
        if eps is not None:  # a float32 attribute or constant: its shortest decimal (1e-05, not 9.9999997e-06)
            eps = float(str(np.float32(eps)))
        if eps is None:
            raise ReadError(f"tf1-graph: layer {scope!r} has a moving mean but no normalization op in the graph")
        modes = sorted({f[1] for f in facts})
        fused = any(f[2] for f in facts)
        preds = {p.name: p for f in facts for p in f[4]}
        update_names = [op.name for ops in calls.values() for op in ops
                        if "AssignMovingAvg" in op.name and op.type.startswith("AssignSub")]
        decay = None
        for ops in calls.values():  # the first call that updates: its weight of the new statistic
            mul = next((op for op in ops if op.name.endswith("AssignMovingAvg/mul")), None)
            if mul is not None:
                decay = update_weight(sess, mul.inputs[1], {p: True for p in preds.values()})
                break
        layer = live.get(scope)
        gamma_beta = [f"{scope}/{k}" for k in ("gamma", "beta") if f"{scope}/{k}" in variables]
        mean = _f64(values[f"{scope}/moving_mean"])
        out.append(BNInfo(
            name=scope, type="tf.compat.v1.layers.batch_normalization", framework="tf1-graph",
            channels=int(mean.shape[0]), eps=float(eps),
            momentum=None if decay is None else round(decay, 9),
            momentum_native=None if decay is None else round(1.0 - decay, 9),
            momentum_weights=decl.momentum_weights.value, channel_axis=next((f[3] for f in facts), -1),
            estimator=decl.estimator_for("fused" if fused else "non-fused"), mode=" / ".join(modes), tracking=True,
            frozen=bool(gamma_beta) and not any(n in trainable for n in gamma_beta),
            stats_still=not any(n in updates for n in update_names),
            dtype=variables[f"{scope}/moving_mean"].dtype.base_dtype.name,
            mean=mean, var=_f64(values[f"{scope}/moving_variance"]),
            scale=_f64(values.get(f"{scope}/gamma")), offset=_f64(values.get(f"{scope}/beta")),
            trainable_attr=None if layer is None else bool(layer.trainable)))
    return out


def infer_tf1_graph(model, x):
    """The output tensor on `x`, with every `training` predicate fed False (no update op is fetched)."""
    import tensorflow as tf

    sess, x_t, y_t = tf1_parts(model)
    if x_t is None:
        raise ReadError("tf1-graph: pass (session, input_tensor, output_tensor) to compare outputs")
    feed = {x_t: np.asarray(x)}
    for op in sess.graph.get_operations():
        if op.type in CONDS and op.inputs[0].dtype == tf.bool and op.inputs[0].op.type.startswith("Placeholder"):
            feed[op.inputs[0]] = False
    return sess.run(y_t, feed)


def tf1_fan_ins(model) -> list[int]:
    import tensorflow as tf

    sess, _, _ = tf1_parts(model)
    out = []
    for v in sess.graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES):
        name, shape = v.op.name, tuple(v.shape)
        if name.endswith("depthwise_kernel"):
            out.append(int(np.prod(shape[:-2])))
        elif name.endswith("kernel"):
            out.append(int(np.prod(shape[:-1])))
    return out
