"""Mixed precision in a TF1 graph: the batch_normalization function fed a low-precision placeholder, and a float32
BatchNormalization layer fed one."""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import MixedRun, State, Unsupported
from bnsuite.adapters.mixed_precision import as_f64, both, parse, placeholder_shape, rule

_TFK_CAST = ("tf_keras/src/layers/normalization/batch_normalization.py: call() starts with "
             "`inputs = tf.cast(inputs, self.compute_dtype)`; 16-bit inputs: 'Do all math in float32', the fused "
             "kernel FusedBatchNormV3 has U = float (tensorflow/core/kernels/fused_batch_norm_op.cc)")
_TFK_PARAMS = ("tf_keras/src/layers/normalization/batch_normalization.py: _param_dtype raises float16/bfloat16 "
               "parameters and moving statistics to float32")
_TF1_INFER = ("tf_keras/src/legacy_tf_layers/base.py: dtype=None becomes the '_infer' policy, and "
              "tf_keras/src/engine/base_layer_v1.py: _maybe_build adopts the first input's dtype")

# The idiom kinds the runners here implement ("<kind>-<dtype>"); the declarations name the same ones.
KINDS = ("defaults", "float32_layer")


def declared() -> dict:
    """idiom -> Cited[MixedRule] of the TF1 graph layer (observed with TensorFlow 2.21)."""
    return both(lambda low: {
        "defaults": rule(low, "float32", f"{_TF1_INFER}; {_TFK_CAST}; {_TFK_PARAMS}"),
        "float32_layer": rule("float32", "float32", f"dtype='float32' fixes the compute dtype; {_TFK_CAST}"),
    })


def step(cls, idiom: str, spec, state: State, x: np.ndarray) -> MixedRun:
    import tensorflow as tf

    kind, low = parse(idiom)
    if kind not in KINDS:
        raise Unsupported(f"tf1-graph has no {kind!r} idiom")
    v1 = tf.compat.v1
    kw = dict(axis=spec.channel_axis, epsilon=spec.eps, momentum=1.0 - spec.momentum)
    graph = tf.Graph()
    with graph.as_default():
        xp = v1.placeholder(low, placeholder_shape(spec))
        if kind == "defaults":
            y_train = v1.layers.batch_normalization(xp, training=True, name="bn", **kw)
            y_infer = v1.layers.batch_normalization(xp, training=False, name="bn", reuse=True, **kw)
        else:
            lay = v1.layers.BatchNormalization(dtype="float32", name="bn", **kw)
            y_train, y_infer = lay(xp, training=True), lay(xp, training=False)
        with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
            y_train = tf.identity(y_train)
        by_name = {v.name.split("/")[-1].split(":")[0]: v for v in v1.global_variables()}
        ws = [by_name[k] for k in ("gamma", "beta", "moving_mean", "moving_variance")]
        phs = [v1.placeholder(w.dtype.base_dtype, w.shape) for w in ws]
        assign = [w.assign(p) for w, p in zip(ws, phs)]
        fused = any(op.type.startswith("FusedBatchNorm") for op in graph.get_operations())
        init = v1.global_variables_initializer()
    dtypes = lambda: dict(zip(("scale", "offset", "mean", "var"), (w.dtype.base_dtype.name for w in ws)))
    with v1.Session(graph=graph) as sess:
        sess.run(init)
        sess.run(assign, {p: np.asarray(v).astype(p.dtype.as_numpy_dtype)
                          for p, v in zip(phs, (state.scale, state.offset, state.mean, state.var))})
        feed = {xp: np.asarray(x, np.float32).astype(xp.dtype.as_numpy_dtype)}
        built = dtypes()
        y = sess.run(y_train, feed)
        st = State(*(as_f64(a) for a in sess.run(ws)))
        yi = sess.run(y_infer, feed)
    snippet = (f"x = tf.compat.v1.placeholder('{low}', {list(placeholder_shape(spec))})\n"
               + ("y = tf.compat.v1.layers.batch_normalization(x, training=True, " if kind == "defaults" else
                  "y = tf.compat.v1.layers.BatchNormalization(dtype='float32', ")
               + ", ".join(f"{k}={v!r}" for k, v in kw.items())
               + (")" if kind == "defaults" else ")(x, training=True)"))
    return MixedRun(as_f64(y), y_train.dtype.base_dtype.name, as_f64(yi), st, built, dtypes(),
                    "fused" if fused else "non-fused", snippet)
