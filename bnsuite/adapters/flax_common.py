"""What flax.linen.BatchNorm and flax.nnx.BatchNorm share: the declaration skeleton, JAX device handling and the
adapter base class (FlaxAdapter).

Sources: google/flax @ 18f8f311 (flax 0.12.8): flax/linen/normalization.py (LINEN), flax/nnx/nn/normalization.py (NNX).
"""

from __future__ import annotations

import functools

import numpy as np

from bnsuite.adapters import numerics
from bnsuite.adapters.base import BatchNormAdapter, Cited, Declaration, DtypeRule, Grads, State, by_version
from bnsuite.adapters.capabilities import conventional
from bnsuite.adapters.conventions import FLAX_AFFINE, SlotState, is_channels_last, old_weight_kwargs
from bnsuite.adapters.frameworks import Framework, OnFramework

LINEN = "flax/linen/normalization.py"
NNX = "flax/nnx/nn/normalization.py"

FAST_VARIANCE_NOTE = (
    "use_fast_variance=True (default) computes var = max(0, E[x^2] - E[x]^2) in one pass, which loses digits when "
    "|mean| >> std (google/flax#1491); the clamp at 0 hides negative results")


def flax_precision(src: str, nnx: bool) -> dict:
    """Flax computes statistics in at least float32, stores params in param_dtype (float32) and batch statistics
    created as float32, whatever `dtype` (the computation/output dtype) is."""
    stats = f"{src}: _compute_stats, dtype = jnp.promote_types(dtype, jnp.float32) (force_float32_reductions=True)"
    store = (f"{src}: param_dtype = jnp.float32 default for scale/bias; batch statistics initialized with "
             "jnp.float32 (linen: self.variable('batch_stats', 'mean', lambda s: jnp.zeros(s, jnp.float32 ...)); "
             "nnx: nnx.BatchStat(jnp.zeros(feature_shape, jnp.float32)))")
    out = f"{src}: _normalize returns jnp.asarray(y, dtype)"
    low = lambda dt: Cited(DtypeRule("yes", output=dt, stats="float32", state="float32"), f"{stats}; {store}; {out}")
    replaced = ("REPLACES the statistic with momentum * ra + (1 - momentum) * batch_stat, which promotes to float64: "
                "the batch statistics' dtype changes after the first step")
    f64 = lambda after, how: Cited(
        DtypeRule("yes", output="float64", stats="float64", state="float32", state_after_training=after),
        f"{stats}; {store}; {how}. float64 runs inside jax.enable_x64 (adapters/flax_common.py x64_scope)")
    if nnx:
        # nnx replaced the BatchStat's array on every update until the Variable refactor of 0.12.1, which makes
        # `var[...] = value` write into the existing array (a scatter that keeps its dtype).
        return {"float16": low("float16"), "bfloat16": low("bfloat16"), "float64": by_version(
            "flax",
            ("<0.12.1", f64("float64", "nnx BatchNorm.__call__ assigns `self.mean.value = ...` (`self.mean[...] = ...` "
                                       "from 0.11.0, which Variable.__setitem__ turns into `self.value = value`) and "
                                       f"{replaced}")),
            (">=0.12.1", f64(None, "nnx BatchNorm.__call__ `self.mean[...] = ...`: flax/nnx/variablelib.py "
                                   "Variable.set_value(value, index=...) writes with raw_value.at[...].set(value), "
                                   "keeping the float32 BatchStat (commit 33fbbe6b 'Variable refactor', first released "
                                   "in 0.12.1; jax scatter FutureWarning 'cannot safely cast value from dtype=float64 "
                                   "to dtype=float32')")))}
    return {"float16": low("float16"), "bfloat16": low("bfloat16"),
            "float64": f64("float64", f"linen `ra_mean.value = ...` {replaced}")}


def flax_declaration(src: str, framework: str, *, freeze, training_default: Cited[str],
                     batch_stats_inference: Cited[str | None], mixed_precision: dict) -> Declaration:
    return Declaration(
        precision=flax_precision(src, nnx=src == NNX),
        mixed_precision=mixed_precision,
        framework=framework,
        default_eps=Cited(1e-5, f"{src}: BatchNorm epsilon: float = 1e-5"),
        default_momentum=Cited(0.99, f"{src}: BatchNorm momentum: float = 0.99"),
        momentum_weights=Cited("old", f"{src}: ra_mean = momentum * ra_mean + (1 - momentum) * mean"),
        default_channels_last=Cited(True, f"{src}: BatchNorm axis: int = -1"),
        running_var_estimator=Cited({"default": "biased"}, f"{src}: _compute_stats, var = mean(x^2) - mean(x)^2 "
                                                           "(divides by n, no Bessel correction)"),
        normalize_estimator=Cited("biased", f"{src}: _compute_stats"),
        single_value_batch=Cited("offset", f"{src}: no batch-size check; variance 0 gives output = bias"),
        cumulative_average=Cited(False, f"{src}: momentum is a float; no cumulative-average mode"),
        batch_stats_inference=batch_stats_inference,
        training_default=training_default,
        variance_algorithm=Cited("one-pass-clamped", f"{src}: _compute_stats with use_fast_variance=True (default): "
                                                     "var = jnp.maximum(0.0, mu2 - _abs_sq(mu)); google/flax#1491"),
        freeze=freeze,
        notes={"fast_variance": FAST_VARIANCE_NOTE},
    )


def x64_scope(dtype: str):
    """jax.enable_x64(True) for float64 layers only, so the float32 cases of the process keep JAX's defaults.

    JAX keys its jit caches on the x64 setting, so functions traced inside the scope are not reused outside it.
    """
    import contextlib

    import jax

    if dtype != "float64":
        return contextlib.nullcontext()
    # jax.enable_x64 is public in jax 0.10.2; jax 0.7.0 and earlier have it in jax.experimental only.
    enable = getattr(jax, "enable_x64", None)
    if enable is None:
        from jax.experimental import enable_x64 as enable
    return enable(True)


def optimizer_update(opt, model, grads) -> None:
    """One nnx.Optimizer step: `update(model, grads)` since flax 0.11.0 (the optimizer no longer holds the model);
    `update(grads)` before (flax/nnx/training/optimizer.py in each release)."""
    import inspect

    if "model" in inspect.signature(opt.update).parameters:
        opt.update(model, grads)
    else:
        opt.update(grads)


def assign(var, value) -> None:
    """Replace an nnx Variable's array. flax >= 0.11 assigns with `var[...] = value` (and deprecates the `.value`
    setter in 0.12); earlier releases raise TypeError there (no item assignment, or the immutable jax array's), and
    replace the array through the `.value` setter."""
    try:
        var[...] = value
    except TypeError:
        var.value = value


def with_x64(method):
    """Run an adapter method inside x64_scope(self.spec.dtype) (or the dtype of the Spec passed to __init__)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        spec = getattr(self, "spec", None) or args[0]
        with x64_scope(spec.dtype):
            return method(self, *args, **kwargs)

    return run


def as_jax(a, dtype, device=None):
    """jnp.asarray(a, dtype) placed on `device`: NumPy casts on the host, as jnp.asarray does with NumPy input, and the
    array is transferred, without the identity convert_element_type program jnp.asarray compiles per new shape."""
    import jax

    return jax.device_put(np.asarray(a, jax.dtypes.canonicalize_dtype(dtype)), device)


@functools.cache
def shared_jit(fn, n_static: int):
    """`fn` under jax.jit with its first `n_static` arguments (a module, a mode) static, one per process: every caller
    with the same static arguments, shapes and dtypes reuses the first one's trace and program instead of tracing,
    lowering and compiling its own."""
    import jax

    return jax.jit(fn, static_argnums=tuple(range(n_static)))


def jax_device(kind: str):
    import jax

    if kind == "gpu":
        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        return gpus[0] if gpus else None
    return jax.devices("cpu")[0]


def gpu_reason(kind: str) -> str | None:
    if kind == "cpu":
        return None
    return None if jax_device(kind) is not None else "no GPU visible to JAX (jax.devices() has no gpu platform)"


def jax_versions() -> dict[str, str]:
    import flax
    import jax

    return {"flax": flax.__version__, "jax": jax.__version__}


# Flax on JAX; float64 runs inside jax.enable_x64 (x64_scope above), not process-wide.
FLAX = Framework(requires=("flax", "jax"), families=("flax", "jax"),
                 pins={"jax": "0.10.2", "jaxlib": "0.10.2", "flax": "0.12.8", "optax": "0.2.8"}, versions=jax_versions,
                 numeric_settings=numerics.jax_full_fp32, device_reason=gpu_reason)


def flax_capabilities(api: str) -> dict[str, str]:
    """The capabilities of the adapter over Flax's `api` ("linen" or "nnx"): one module per capability serves both
    APIs, with an entry point per API."""
    prefix = f"Flax{api.capitalize()}"
    return {**conventional("flax", "blocks", "training_loops", "compile", prefix=prefix),
            "network": f"bnsuite.adapters.nets.flax_net:build_{api}",
            "norms": f"bnsuite.adapters.norms.flax_norms:{api.capitalize()}Norms",
            "replicas": f"bnsuite.adapters.replicas.flax_shard:{prefix}Replicas",
            "mixed_precision": f"bnsuite.adapters.mixed_precision.flax_mixed:{api}_step",
            "edge_facts": f"bnsuite.adapters.edge_facts:FLAX_{api.upper()}"}


class FlaxAdapter(OnFramework, SlotState, BatchNormAdapter):
    """The base of the flax.linen and flax.nnx adapters: availability, dtypes, devices (``FLAX``), the Spec ->
    constructor conversion (adapters/conventions.py, Flax's names use_bias/use_scale), the state loop, the
    hyperparameters and the shape of backward and frozen_step (arrays in on the layer's device, float64 out).

    A member sets ``self._bn_module`` (the object holding epsilon, momentum and axis), names where each state slot
    lives (``_slot``) and how to read and write it, and implements ``_grads`` and ``_frozen_step``.
    """

    runs_on = FLAX

    def __init__(self, spec):
        super().__init__(spec)
        import jax
        import jax.numpy as jnp

        self._kwargs = {"dtype": spec.dtype, **old_weight_kwargs(spec, "flax", FLAX_AFFINE)}
        self.jax, self.jnp = jax, jnp
        self.device = jax_device(spec.device)

    def _x(self, x):
        return as_jax(x, self.spec.dtype, self.device)

    def _put(self, value, like):
        """`value` on the layer's device in the dtype of the array it replaces."""
        return as_jax(value, like.dtype, self.device)

    @with_x64
    def get_state(self) -> State:
        return SlotState.get_state(self)

    @with_x64
    def set_state(self, state: State) -> None:
        SlotState.set_state(self, state)

    @with_x64
    def backward(self, x, dy, training):
        """Gradient of sum(y * dy) w.r.t. x and the parameters (the member's ``_grads``); None for a parameter the
        layer does not have."""
        dx, dparam = self._grads(self._x(x), self._x(dy), training)
        g = lambda slot, name: None if self._slot(slot) is None else np.asarray(dparam(name), np.float64)
        return Grads(np.asarray(dx, np.float64), g("scale", "scale"), g("offset", "bias"))

    def _grads(self, xj, dyj, training):
        """(dx, name -> gradient of the parameter Flax calls `name`), the statistics update discarded."""
        raise NotImplementedError

    @with_x64
    def frozen_step(self, idiom, x, dy, lr):
        return np.asarray(self._frozen_step(idiom, self._x(x), self._x(dy), lr), np.float64)

    def _frozen_step(self, idiom, xj, dyj, lr):
        """One optax SGD step on loss = sum(y * dy) after the idiom; returns y."""
        raise NotImplementedError

    def _channel_mask(self, mask):
        """A per-position mask as flax takes it: broadcastable to x, the channel axis of size 1."""
        return self.jnp.asarray(np.expand_dims(np.asarray(mask, bool), self.spec.channel_axis))

    def hyperparameters(self):
        m = self._bn_module
        return {"eps": m.epsilon, "momentum": m.momentum, "channels_last": is_channels_last(m.axis, self.spec.rank)}

    def _snippet_kwargs(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._kwargs.items())
