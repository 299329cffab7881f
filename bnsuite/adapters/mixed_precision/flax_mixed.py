"""Mixed precision in Flax linen and NNX: BatchNorm with defaults fed low-precision activations, with dtype= and with
param_dtype=."""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, MixedRun, State, Unsupported, by_version, dtype_name
from bnsuite.adapters.flax_common import assign
from bnsuite.adapters.mixed_precision import as_f64, both, parse, rule

_FLAX_STATS = "_compute_stats: dtype = jnp.promote_types(dtype, jnp.float32) (force_float32_reductions=True)"
_FLAX_STORE = ("batch statistics are created in jnp.float32 (force_float32_reductions=True), scale/bias in "
               "param_dtype")

# The idiom kinds the runners here implement ("<kind>-<dtype>"); the declarations name the same ones.
KINDS = ("defaults", "dtype", "param_dtype")


def declared(nnx: bool) -> dict:
    """idiom -> Cited[MixedRule] of flax.nnx.BatchNorm (`nnx`) or flax.linen.BatchNorm (observed with flax 0.12.8)."""
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
    return both(lambda low: {
        "defaults": rule("float32", "float32", f"{none_out}; float32 parameters promote {low} x to float32; "
                                                f"{src}: {_FLAX_STATS}; {_FLAX_STORE}"),
        "dtype": rule(low, "float32", f"{src}: _normalize returns jnp.asarray(y, dtype) with dtype={low}; "
                                       f"{_FLAX_STATS}; {_FLAX_STORE}"),
        # linen and NNX (from flax 0.12.1) disagree here: the same module arguments give a float32 output in NNX.
        "param_dtype": rule("float32" if promotes.value else low, low,
                             f"{none_out}; {_FLAX_STATS}; {_FLAX_STORE}"),
    })


def _flax_kwargs(kind: str, low: str, spec) -> dict:
    if kind not in KINDS:
        raise Unsupported(f"flax has no {kind!r} idiom")
    kw = dict(axis=spec.channel_axis, momentum=1.0 - spec.momentum, epsilon=spec.eps)
    if kind != "defaults":
        kw[kind] = low
    return kw


def linen_step(cls, idiom: str, spec, state: State, x: np.ndarray) -> MixedRun:
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
    st = State(as_f64(p["scale"]), as_f64(p["bias"]), as_f64(s["mean"]), as_f64(s["var"]))
    kw = ", ".join(f"{k}={v!r}" for k, v in _flax_kwargs(kind, low, spec).items())
    snippet = (f"bn = flax.linen.BatchNorm({kw})\n"
               f"y, _ = bn.apply(variables, x.astype('{low}'), use_running_average=False, mutable=['batch_stats'])")
    return MixedRun(as_f64(y), dtype_name(y.dtype), as_f64(yi), st, built, dtypes(p, s), snippet=snippet)


def nnx_step(cls, idiom: str, spec, state: State, x: np.ndarray) -> MixedRun:
    import jax.numpy as jnp
    from flax import nnx

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
    st = State(*(as_f64(v[...]) for v in vs))
    yi = bn(xj, use_running_average=True)
    kw = ", ".join(f"{k}={v!r}" for k, v in _flax_kwargs(kind, low, spec).items())
    snippet = (f"bn = flax.nnx.BatchNorm({spec.num_features}, {kw}, rngs=nnx.Rngs(0))\n"
               f"y = bn(x.astype('{low}'), use_running_average=False)")
    return MixedRun(as_f64(y), dtype_name(y.dtype), as_f64(yi), st, built, after, snippet=snippet)
