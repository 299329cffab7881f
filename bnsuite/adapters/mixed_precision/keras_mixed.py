"""Mixed precision in Keras 3 and tf_keras: the layer built with defaults fed low-precision activations, and the layer
built under a global mixed dtype policy (set, then restored)."""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, MixedRule, MixedRun, State, Unsupported, by_version
from bnsuite.adapters.mixed_precision import as_f64, both, keras_policy, parse, placeholder_shape, rule

_K3_CALL = ("keras/src/layers/normalization/batch_normalization.py: call(), compute_dtype = "
            "backend.result_type(inputs.dtype, 'float32'); return ops.cast(outputs, self.compute_dtype)")
_K3_AUTOCAST = ("keras/src/layers/layer.py: Layer.__call__ converts floating inputs to self.input_dtype (the "
                "policy's compute dtype, float32 by default) when _convert_input_args")
_K3_VARS = ("keras/src/layers/normalization/batch_normalization.py: build() add_weight(autocast=False) in the "
            "policy's variable_dtype (float32 for mixed_float16/mixed_bfloat16)")
_TFK_CAST = ("tf_keras/src/layers/normalization/batch_normalization.py: call() starts with "
             "`inputs = tf.cast(inputs, self.compute_dtype)`; 16-bit inputs: 'Do all math in float32', the fused "
             "kernel FusedBatchNormV3 has U = float (tensorflow/core/kernels/fused_batch_norm_op.cc)")
_TFK_PARAMS = ("tf_keras/src/layers/normalization/batch_normalization.py: _param_dtype raises float16/bfloat16 "
               "parameters and moving statistics to float32")

# The idiom kinds the runners here implement ("<kind>-<dtype>"); the declarations name the same ones.
KINDS = ("defaults", "policy")


def _keras_torch_policy_updates() -> Cited[bool]:
    """Whether BatchNormalization's step under a mixed policy updates the moving statistics on the torch backend."""
    return by_version(
        "keras",
        ("<3.2.0", Cited(False, "keras/src/backend/torch/core.py: Variable._direct_assign does "
                                "`self.value.copy_(value)`, and inside Layer.__call__'s AutocastScope (a mixed policy) "
                                "self.value of a float32 variable is a float16/bfloat16 COPY: "
                                "BatchNormalization.call's moving_mean/moving_variance.assign writes into the copy and "
                                "the moving statistics never change (observed on keras 3.0.5); commit ff2557efca "
                                "'Reintroduce the option for autocasting to individual weights' (#19391), first "
                                "released in 3.2.0, builds them with add_weight(autocast=False)")),
        (">=3.2.0", Cited(True, _K3_VARS)))


def declared_keras3(backend: str) -> dict:
    """idiom -> Cited[MixedRule] of Keras 3 on `backend` (observed with keras 3.15.1)."""
    updates = _keras_torch_policy_updates() if backend == "torch" else Cited(True, _K3_VARS)
    return both(lambda low: {
        "defaults": rule("float32", "float32", f"{_K3_AUTOCAST}; {_K3_CALL}"),
        "policy": Cited(MixedRule("yes", output=low, stats="float32", params="float32", state="float32",
                                  running_stats_update=updates.value),
                        f"keras.config.set_dtype_policy('mixed_{low}'): compute dtype {low}, variable dtype "
                        f"float32; {_K3_AUTOCAST}; {_K3_CALL}; {updates.source}"),
    })


def declared_tf_keras() -> dict:
    """idiom -> Cited[MixedRule] of the tf_keras layers, V2 and V1 alike (observed with tf_keras 2.21)."""
    return both(lambda low: {
        "defaults": rule("float32", "float32", f"the layer's compute dtype is float32; {_TFK_CAST}"),
        "policy": rule(low, "float32", f"tf_keras.mixed_precision.set_global_policy('mixed_{low}'): compute "
                                        f"dtype {low}; {_TFK_CAST}; {_TFK_PARAMS}"),
    })


def keras3_step(cls, idiom: str, spec, state: State, x: np.ndarray) -> MixedRun:
    import keras

    kind, low = parse(idiom)
    if kind not in KINDS:
        raise Unsupported(f"keras has no {kind!r} idiom")
    policy = f"mixed_{low}" if kind == "policy" else None
    std = keras.backend.standardize_dtype
    with keras_policy(keras.config.dtype_policy, keras.config.set_dtype_policy, policy):
        lay = keras.layers.BatchNormalization(axis=spec.channel_axis, epsilon=spec.eps, momentum=1.0 - spec.momentum)
        lay.build(placeholder_shape(spec))
    ws = (lay.gamma, lay.beta, lay.moving_mean, lay.moving_variance)
    for w, val in zip(ws, (state.scale, state.offset, state.mean, state.var)):
        w.assign(np.asarray(val).astype(std(w.value.dtype)))
    dtypes = lambda: dict(zip(("scale", "offset", "mean", "var"), (std(w.value.dtype) for w in ws)))
    num = lambda t: as_f64(keras.ops.convert_to_numpy(t))
    xt = keras.ops.convert_to_tensor(np.asarray(x, np.float32), dtype=low)
    built = dtypes()
    y = lay(xt, training=True)
    after = dtypes()
    st = State(*(num(w.value) for w in ws))
    yi = lay(xt, training=False)
    snippet = ("import keras\n" + (f"keras.config.set_dtype_policy('mixed_{low}')\n" if policy else "")
               + f"bn = keras.layers.BatchNormalization(axis={spec.channel_axis}, epsilon={spec.eps}, "
               f"momentum={1.0 - spec.momentum:g})\ny = bn(keras.ops.cast(x, '{low}'), training=True)")
    return MixedRun(num(y), std(y.dtype), num(yi), st, built, after, snippet=snippet)


def tf_keras_step(cls, idiom: str, spec, state: State, x: np.ndarray) -> MixedRun:
    import tensorflow as tf
    import tf_keras

    kind, low = parse(idiom)
    if kind not in KINDS:
        raise Unsupported(f"tf_keras has no {kind!r} idiom")
    mp = tf_keras.mixed_precision
    layer_class = cls._layer_class(None)  # a plain method returning the class; it reads nothing from self
    with keras_policy(mp.global_policy, mp.set_global_policy, f"mixed_{low}" if kind == "policy" else None):
        lay = layer_class(axis=spec.channel_axis, epsilon=spec.eps, momentum=1.0 - spec.momentum)
        lay.build(tf.TensorShape(placeholder_shape(spec)))
    ws = (lay.gamma, lay.beta, lay.moving_mean, lay.moving_variance)
    for w, val in zip(ws, (state.scale, state.offset, state.mean, state.var)):
        w.assign(np.asarray(val).astype(w.dtype.base_dtype.as_numpy_dtype))
    dtypes = lambda: dict(zip(("scale", "offset", "mean", "var"), (w.dtype.base_dtype.name for w in ws)))
    xt = tf.cast(tf.constant(np.asarray(x, np.float32)), low)
    built = dtypes()
    y = lay(xt, training=True)
    after = dtypes()
    st = State(*(as_f64(w.numpy()) for w in ws))
    yi = lay(xt, training=False)
    snippet = (f"bn = {layer_class.__module__}.{layer_class.__name__}(axis={spec.channel_axis}, epsilon={spec.eps}, "
               f"momentum={1.0 - spec.momentum:g})\n"
               + (f"# built under tf_keras.mixed_precision.set_global_policy('mixed_{low}')\n" if kind == "policy"
                  else "")
               + f"y = bn(tf.cast(x, '{low}'), training=True)")
    return MixedRun(as_f64(y.numpy()), y.dtype.base_dtype.name, as_f64(yi.numpy()), st, built, after,
                    "fused" if lay.fused else "non-fused", snippet)
