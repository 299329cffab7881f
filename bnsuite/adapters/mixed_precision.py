"""Mixed precision as users run it: a BatchNorm whose parameters are NOT built in the activations' low-precision dtype.

The precision suite builds each layer IN float16/bfloat16. Users instead keep float32 parameters and run mixed
precision, or feed low-precision activations into a layer built with defaults. An idiom is named "<kind>-<dtype>",
where <dtype> (float16 or bfloat16) is the dtype of the activations that reach the layer (the output of a previous
layer run in that precision):

* ``defaults``: the layer built with the framework's defaults (float32 parameters), fed <dtype> activations;
* ``autocast``: torch, the float32 layer called inside ``torch.autocast("cpu", dtype=<dtype>)``;
* ``policy``: Keras 3 / tf_keras, the layer built while the global dtype policy is ``mixed_<dtype>`` (set, then
  restored: policies are process-global state);
* ``dtype``: Flax, ``BatchNorm(dtype=<dtype>)`` (param_dtype left at float32);
* ``param_dtype``: Flax, ``BatchNorm(param_dtype=<dtype>)`` (dtype left at None);
* ``float32_layer``: TF1 graph, ``tf.compat.v1.layers.BatchNormalization(dtype="float32")`` fed a <dtype> placeholder
  (``defaults`` is the ``tf.compat.v1.layers.batch_normalization`` function, which takes the placeholder's dtype).

Each runner uses the framework's real machinery, applies the canonical Spec (eps, momentum, channel axis), loads the
given State, runs ONE training step and one inference step on the same input, and reports dtypes and values. The
declared facts per adapter (``declared``) are what the suite (suites/test_mixed_precision.py) checks them against.
Framework imports happen inside the runners.
"""

from __future__ import annotations

import contextlib

import numpy as np

from bnsuite.adapters.base import Cited, MixedRule, MixedRun, State, Unsupported, by_version, dtype_name

LOW = ("float16", "bfloat16")


def parse(idiom: str) -> tuple[str, str]:
    """"autocast-bfloat16" -> ("autocast", "bfloat16")."""
    kind, _, low = idiom.rpartition("-")
    if low not in LOW or not kind:
        raise Unsupported(f"unknown mixed-precision idiom {idiom!r}")
    return kind, low


def _shape(spec) -> tuple:
    shape = [None] * spec.rank
    shape[spec.channel_axis] = spec.num_features
    return tuple(shape)


def _f64(a) -> np.ndarray:
    return np.asarray(np.asarray(a).astype(np.float32), np.float64)


# -- declarations ----------------------------------------------------------------------------------------------------
_TORCH_MIXED = ("aten/src/ATen/native/Normalization.cpp: batch_norm_cpu checks is_mixed_type(input, weight, bias, "
                "running_mean, running_var) and dispatches the mixed kernels of aten/src/ATen/native/cpu/"
                "batch_norm_kernel.cpp (batch_norm_cpu_collect_stats_*_impl<BFloat16/Half, float>: statistics in "
                "opmath float, running statistics and parameters stay float, output in the input dtype)")
_TORCH_AUTOCAST = ("aten/src/ATen/autocast_mode.cpp: TORCH_LIBRARY_IMPL(aten, AutocastCPU, m) lists batch_norm under "
                   "neither the lower_precision_fp nor the fp32 cast policy, and TORCH_LIBRARY_IMPL(_, AutocastCPU, m) "
                   "makes every unlisted op a fallthrough: autocast leaves the call alone and the mixed kernel runs "
                   "on the input's dtype (intel-extension-for-pytorch registers batch_norm as fp32 and would change "
                   "this)")
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
_TF1_INFER = ("tf_keras/src/legacy_tf_layers/base.py: dtype=None becomes the '_infer' policy, and "
              "tf_keras/src/engine/base_layer_v1.py: _maybe_build adopts the first input's dtype")
_FLAX_STATS = "_compute_stats: dtype = jnp.promote_types(dtype, jnp.float32) (force_float32_reductions=True)"
_FLAX_STORE = ("batch statistics are created in jnp.float32 (force_float32_reductions=True), scale/bias in "
               "param_dtype")


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


def _rule(output: str, params: str, src: str, stats: str = "float32", state: str = "float32") -> Cited[MixedRule]:
    return Cited(MixedRule("yes", output=output, stats=stats, params=params, state=state), src)


def _both(make) -> dict:
    return {f"{kind}-{low}": rule for low in LOW for kind, rule in make(low).items()}


def declared(adapter_id: str) -> dict:
    """adapter id -> {idiom: Cited[MixedRule]}; every value observed with torch 2.13, keras 3.15.1, tf_keras 2.21,
    flax 0.12.8 and explained by the cited source."""
    if adapter_id == "torch":
        return _both(lambda low: {
            "defaults": _rule(low, "float32", _TORCH_MIXED),
            "autocast": _rule(low, "float32", f"{_TORCH_AUTOCAST}; {_TORCH_MIXED}"),
        })
    if adapter_id.startswith("keras-"):
        updates = _keras_torch_policy_updates() if adapter_id == "keras-torch" else Cited(True, _K3_VARS)
        return _both(lambda low: {
            "defaults": _rule("float32", "float32", f"{_K3_AUTOCAST}; {_K3_CALL}"),
            "policy": Cited(MixedRule("yes", output=low, stats="float32", params="float32", state="float32",
                                      running_stats_update=updates.value),
                            f"keras.config.set_dtype_policy('mixed_{low}'): compute dtype {low}, variable dtype "
                            f"float32; {_K3_AUTOCAST}; {_K3_CALL}; {updates.source}"),
        })
    if adapter_id in ("tf_keras", "tf1-keras"):
        return _both(lambda low: {
            "defaults": _rule("float32", "float32", f"the layer's compute dtype is float32; {_TFK_CAST}"),
            "policy": _rule(low, "float32", f"tf_keras.mixed_precision.set_global_policy('mixed_{low}'): compute "
                                            f"dtype {low}; {_TFK_CAST}; {_TFK_PARAMS}"),
        })
    if adapter_id == "tf1-graph":
        return _both(lambda low: {
            "defaults": _rule(low, "float32", f"{_TF1_INFER}; {_TFK_CAST}; {_TFK_PARAMS}"),
            "float32_layer": _rule("float32", "float32", f"dtype='float32' fixes the compute dtype; {_TFK_CAST}"),
        })
    if adapter_id in ("flax-linen", "flax-nnx"):
        nnx = adapter_id == "flax-nnx"
        src = "flax/nnx/nn/normalization.py" if nnx else "flax/linen/normalization.py"
        follows_params = (f"{src}: _normalize, dtype = dtypes.canonicalize_dtype(*args, dtype=dtype) with args = "
                          "[x, scale, bias] only (the float32 running statistics do not take part): the output dtype "
                          "follows x and the parameters")
        promotes = by_version("flax", ("<0.12.1", Cited(False, follows_params)), (">=0.12.1", Cited(True, (
            f"{src}: BatchNorm.__call__ promotes (x, self.mean, self.var, scale, bias) together with "
            "self.promote_dtype(..., dtype=self.dtype): with dtype=None the float32 running statistics promote x to "
            "float32, whatever param_dtype is (commit 3a630ff0 'add promote_dtype to all standard layers', first "
            "released in 0.12.1)")))) if nnx else Cited(False, follows_params)
        none_out = promotes.source
        return _both(lambda low: {
            "defaults": _rule("float32", "float32", f"{none_out}; float32 parameters promote {low} x to float32; "
                                                    f"{src}: {_FLAX_STATS}; {_FLAX_STORE}"),
            "dtype": _rule(low, "float32", f"{src}: _normalize returns jnp.asarray(y, dtype) with dtype={low}; "
                                           f"{_FLAX_STATS}; {_FLAX_STORE}"),
            # linen and NNX (from flax 0.12.1) disagree here: the same module arguments give a float32 output in NNX.
            "param_dtype": _rule("float32" if promotes.value else low, low,
                                 f"{none_out}; {_FLAX_STATS}; {_FLAX_STORE}"),
        })
    return {}


# -- torch -----------------------------------------------------------------------------------------------------------
def torch_step(cls, idiom: str, spec, state: State, x: np.ndarray, prepare=None) -> MixedRun:
    """The float32 torch layer (the adapter's own build) fed `x` in the idiom's dtype; `prepare(module, dtype)` runs
    after the state is loaded (a hook for wrappers)."""
    kind, low = parse(idiom)
    if kind not in ("defaults", "autocast"):
        raise Unsupported(f"torch has no {kind!r} idiom")
    bn = cls(spec.replace(dtype="float32"))
    torch = bn.torch
    bn.set_state(state)
    low_dt = getattr(torch, low)
    if prepare is not None:
        prepare(bn.module, low_dt)
    xt = bn._to_torch(x).to(low_dt)  # .to keeps the channels-last strides
    ctx = (lambda: torch.autocast("cpu", dtype=low_dt)) if kind == "autocast" else contextlib.nullcontext
    built = bn.state_dtypes()
    with torch.no_grad():
        bn.module.train()
        with ctx():
            y = bn.module(xt)
        after = bn.state_dtypes()
        st = bn.get_state()
        bn.module.eval()
        with ctx():
            yi = bn.module(xt)
    snippet = (f"{bn.snippet().replace(', dtype=torch.float32', '')}\nx = x.to(torch.{low})  # activations\n"
               + (f"with torch.autocast('cpu', dtype=torch.{low}):\n    y = bn(x)" if kind == "autocast"
                  else "y = bn(x)"))
    return MixedRun(bn._from_torch(y), dtype_name(y.dtype), bn._from_torch(yi), st, built, after,
                    bn.code_path(x.shape), snippet)


# -- Keras 3 -----------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _keras_policy(get, set_, name: str | None):
    """Set a process-global dtype policy for the block and restore the previous one."""
    if name is None:
        yield
        return
    old = get()
    set_(name)
    try:
        yield
    finally:
        set_(old)


def keras3_step(cls, idiom: str, spec, state: State, x: np.ndarray) -> MixedRun:
    import keras

    kind, low = parse(idiom)
    if kind not in ("defaults", "policy"):
        raise Unsupported(f"keras has no {kind!r} idiom")
    policy = f"mixed_{low}" if kind == "policy" else None
    std = keras.backend.standardize_dtype
    with _keras_policy(keras.config.dtype_policy, keras.config.set_dtype_policy, policy):
        lay = keras.layers.BatchNormalization(axis=spec.channel_axis, epsilon=spec.eps, momentum=1.0 - spec.momentum)
        lay.build(_shape(spec))
    ws = (lay.gamma, lay.beta, lay.moving_mean, lay.moving_variance)
    for w, val in zip(ws, (state.scale, state.offset, state.mean, state.var)):
        w.assign(np.asarray(val).astype(std(w.value.dtype)))
    dtypes = lambda: dict(zip(("scale", "offset", "mean", "var"), (std(w.value.dtype) for w in ws)))
    num = lambda t: _f64(keras.ops.convert_to_numpy(t))
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


# -- tf_keras (V2 and the V1 layer) ---------------------------------------------------------------------------------
def tf_keras_step(cls, idiom: str, spec, state: State, x: np.ndarray) -> MixedRun:
    import tensorflow as tf
    import tf_keras

    kind, low = parse(idiom)
    if kind not in ("defaults", "policy"):
        raise Unsupported(f"tf_keras has no {kind!r} idiom")
    mp = tf_keras.mixed_precision
    layer_class = cls._layer_class(None)  # a plain method returning the class; it reads nothing from self
    with _keras_policy(mp.global_policy, mp.set_global_policy, f"mixed_{low}" if kind == "policy" else None):
        lay = layer_class(axis=spec.channel_axis, epsilon=spec.eps, momentum=1.0 - spec.momentum)
        lay.build(tf.TensorShape(_shape(spec)))
    ws = (lay.gamma, lay.beta, lay.moving_mean, lay.moving_variance)
    for w, val in zip(ws, (state.scale, state.offset, state.mean, state.var)):
        w.assign(np.asarray(val).astype(w.dtype.base_dtype.as_numpy_dtype))
    dtypes = lambda: dict(zip(("scale", "offset", "mean", "var"), (w.dtype.base_dtype.name for w in ws)))
    xt = tf.cast(tf.constant(np.asarray(x, np.float32)), low)
    built = dtypes()
    y = lay(xt, training=True)
    after = dtypes()
    st = State(*(_f64(w.numpy()) for w in ws))
    yi = lay(xt, training=False)
    snippet = (f"bn = {layer_class.__module__}.{layer_class.__name__}(axis={spec.channel_axis}, epsilon={spec.eps}, "
               f"momentum={1.0 - spec.momentum:g})\n"
               + (f"# built under tf_keras.mixed_precision.set_global_policy('mixed_{low}')\n" if kind == "policy"
                  else "")
               + f"y = bn(tf.cast(x, '{low}'), training=True)")
    return MixedRun(_f64(y.numpy()), y.dtype.base_dtype.name, _f64(yi.numpy()), st, built, after,
                    "fused" if lay.fused else "non-fused", snippet)


# -- TF1 graph -------------------------------------------------------------------------------------------------------
def tf1_graph_step(cls, idiom: str, spec, state: State, x: np.ndarray) -> MixedRun:
    import tensorflow as tf

    kind, low = parse(idiom)
    if kind not in ("defaults", "float32_layer"):
        raise Unsupported(f"tf1-graph has no {kind!r} idiom")
    v1 = tf.compat.v1
    kw = dict(axis=spec.channel_axis, epsilon=spec.eps, momentum=1.0 - spec.momentum)
    graph = tf.Graph()
    with graph.as_default():
        xp = v1.placeholder(low, _shape(spec))
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
        st = State(*(_f64(a) for a in sess.run(ws)))
        yi = sess.run(y_infer, feed)
    snippet = (f"x = tf.compat.v1.placeholder('{low}', {list(_shape(spec))})\n"
               + ("y = tf.compat.v1.layers.batch_normalization(x, training=True, " if kind == "defaults" else
                  "y = tf.compat.v1.layers.BatchNormalization(dtype='float32', ")
               + ", ".join(f"{k}={v!r}" for k, v in kw.items())
               + (")" if kind == "defaults" else ")(x, training=True)"))
    return MixedRun(_f64(y), y_train.dtype.base_dtype.name, _f64(yi), st, built, dtypes(),
                    "fused" if fused else "non-fused", snippet)


# -- Flax linen and NNX ----------------------------------------------------------------------------------------------
def _flax_kwargs(kind: str, low: str, spec) -> dict:
    if kind not in ("defaults", "dtype", "param_dtype"):
        raise Unsupported(f"flax has no {kind!r} idiom")
    kw = dict(axis=spec.channel_axis, momentum=1.0 - spec.momentum, epsilon=spec.eps)
    if kind != "defaults":
        kw[kind] = low
    return kw


def flax_linen_step(cls, idiom: str, spec, state: State, x: np.ndarray) -> MixedRun:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    kind, low = parse(idiom)
    m = nn.BatchNorm(**_flax_kwargs(kind, low, spec))
    xj = jnp.asarray(np.asarray(x, np.float32), low)
    v = m.init(jax.random.PRNGKey(0), xj, use_running_average=True)
    p, s = dict(v["params"]), dict(v["batch_stats"])
    for col, k, val in ((p, "scale", state.scale), (p, "bias", state.offset), (s, "mean", state.mean),
                        (s, "var", state.var)):
        col[k] = jnp.asarray(val, col[k].dtype)
    dtypes = lambda p, s: {"scale": dtype_name(p["scale"].dtype), "offset": dtype_name(p["bias"].dtype),
                           "mean": dtype_name(s["mean"].dtype), "var": dtype_name(s["var"].dtype)}
    built = dtypes(p, s)
    y, upd = m.apply({"params": p, "batch_stats": s}, xj, use_running_average=False, mutable=["batch_stats"])
    s = upd["batch_stats"]
    yi = m.apply({"params": p, "batch_stats": s}, xj, use_running_average=True)
    st = State(_f64(p["scale"]), _f64(p["bias"]), _f64(s["mean"]), _f64(s["var"]))
    kw = ", ".join(f"{k}={v!r}" for k, v in _flax_kwargs(kind, low, spec).items())
    snippet = (f"bn = flax.linen.BatchNorm({kw})\n"
               f"y, _ = bn.apply(variables, x.astype('{low}'), use_running_average=False, mutable=['batch_stats'])")
    return MixedRun(_f64(y), dtype_name(y.dtype), _f64(yi), st, built, dtypes(p, s), snippet=snippet)


def flax_nnx_step(cls, idiom: str, spec, state: State, x: np.ndarray) -> MixedRun:
    import jax.numpy as jnp
    from flax import nnx

    from bnsuite.adapters.flax_common import assign

    kind, low = parse(idiom)
    bn = nnx.BatchNorm(spec.num_features, rngs=nnx.Rngs(0), **_flax_kwargs(kind, low, spec))
    vs = (bn.scale, bn.bias, bn.mean, bn.var)
    for var, val in zip(vs, (state.scale, state.offset, state.mean, state.var)):
        assign(var, jnp.asarray(val, var[...].dtype))
    dtypes = lambda: dict(zip(("scale", "offset", "mean", "var"), (dtype_name(v[...].dtype) for v in vs)))
    xj = jnp.asarray(np.asarray(x, np.float32), low)
    built = dtypes()
    y = bn(xj, use_running_average=False)
    after = dtypes()
    st = State(*(_f64(v[...]) for v in vs))
    yi = bn(xj, use_running_average=True)
    kw = ", ".join(f"{k}={v!r}" for k, v in _flax_kwargs(kind, low, spec).items())
    snippet = (f"bn = flax.nnx.BatchNorm({spec.num_features}, {kw}, rngs=nnx.Rngs(0))\n"
               f"y = bn(x.astype('{low}'), use_running_average=False)")
    return MixedRun(_f64(y), dtype_name(y.dtype), _f64(yi), st, built, after, snippet=snippet)
