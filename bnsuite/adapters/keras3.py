"""Keras 3 adapters: keras.layers.BatchNormalization on the tensorflow, jax and torch backends.

Keras fixes its backend once per process from KERAS_BACKEND, so each backend is its own adapter id and runs in its own
process (tox env). Sources cited below are keras-team/keras @ 3422977a (keras/src/...).
"""

from __future__ import annotations

import contextlib

import numpy as np

from bnsuite.adapters.base import (BatchNormAdapter, Cited, Declaration, DtypeRule, FreezeFacts, Grads, Probe, State,
                           Unsupported, dtype_name)

_BN = "keras/src/layers/normalization/batch_normalization.py"


def _declaration(backend: str) -> Declaration:
    moments_src = {
        "tensorflow": "keras/src/backend/tensorflow/nn.py: moments -> tf.nn.moments (divides by N; "
                      "tensorflow/python/ops/nn_impl.py: reduce_mean(squared_difference(y, mean)))",
        "jax": "keras/src/backend/jax/nn.py: moments -> jnp.var(x, axis=axes) (ddof=0; jnp.var centers first)",
        "torch": "keras/src/backend/torch/nn.py: moments -> mean(square(x)) - square(mean) (divides by N, no clamp "
                 "at 0)",
    }[backend]
    freeze = {
        "trainable_false_training_true": Cited(
            FreezeFacts("running", False, False),
            f"{_BN}: call() `if training and self.trainable:` else moving statistics; trainable=False also "
            "removes gamma/beta from trainable_weights"),
        "trainable_false_training_false": Cited(FreezeFacts("running", False, False), f"{_BN}: call()"),
        "trainable_false_training_omitted": Cited(FreezeFacts("running", False, False), f"{_BN}: call()"),
        "trainable_false_fit": Cited(
            FreezeFacts("running", False, False),
            f"{_BN}: docstring 'setting trainable = False on the layer means that the layer will be subsequently "
            "run in inference mode'"),
        "subclassed_training_false_fit": Cited(
            FreezeFacts("running", False, True),
            f"{_BN}: training=False uses the moving statistics; gamma/beta stay trainable. A subclassed model's "
            "call() passes training=False to the layer itself"),
        # FINDING: the functional-API idiom `bn(x, training=False)` (keras-team/keras#4762, the transfer-learning
        # guide's `base_model(inputs, training=False)`) is overridden during fit in Keras 3.
        "functional_training_false_fit": Cited(
            FreezeFacts("batch", True, True),
            "keras/src/models/functional.py: operation_fn writes every call-context argument of the outer call "
            "(fit's training=True) over the layer's own recorded kwargs (`if name in operation._call_context_args "
            "and value is not None: kwargs[name] = value`), so training=False baked into a functional model is "
            "replaced by training=True (observed with keras 3.15.1 on all backends)"),
    }
    if backend == "torch":
        freeze["torch_module_eval"] = Cited(
            FreezeFacts("batch", True, True),
            "keras/src/backend/torch/layer.py: TorchLayer never reads nn.Module.training; "
            "keras/src/layers/layer.py resolves `training` from the call arguments only")
    return Declaration(
        precision=_precision(backend),
        framework=f"keras 3 ({backend} backend)",
        default_eps=Cited(1e-3, f"{_BN}: __init__(epsilon=1e-3)"),
        default_momentum=Cited(0.99, f"{_BN}: __init__(momentum=0.99)"),
        momentum_weights=Cited("old", f"{_BN}: call(), moving_mean * self.momentum + mean * (1.0 - self.momentum)"),
        default_channels_last=Cited(True, f"{_BN}: __init__(axis=-1)"),
        running_var_estimator=Cited({"default": "biased"}, f"{_BN}: _moments -> ops.moments; {moments_src}"),
        normalize_estimator=Cited("biased", moments_src),
        single_value_batch=Cited("offset", f"{_BN}: no batch-size check; a single value has variance 0, "
                                           "so (x - mean) = 0 and the output is beta"),
        cumulative_average=Cited(False, f"{_BN}: momentum is a float; no cumulative-average mode"),
        batch_stats_inference=Cited(None, f"{_BN}: batch statistics only with training=True, which also updates "
                                          "the moving statistics"),
        variance_algorithm=Cited({"tensorflow": "two-pass", "jax": "two-pass", "torch": "one-pass-unclamped"}[backend],
                                 moments_src),
        training_default=Cited("inference", "keras/src/layers/layer.py: training resolution ends with "
                                            "'(5) False (treating the layer as if it's in inference)'"),
        freeze=freeze,
    )


_DTYPES = "keras/src/backend/common/dtypes.py"


def _precision(backend: str) -> dict:
    """Keras computes BatchNorm in result_type(input, float32) and casts the output to the layer's compute dtype."""
    call = (f"{_BN}: call(), compute_dtype = backend.result_type(inputs.dtype, 'float32') ... "
            "return ops.cast(outputs, self.compute_dtype)")
    weights = f"{_BN}: build() add_weight(..., autocast=False) in the policy's variable_dtype"
    low = lambda dt: Cited(DtypeRule("yes", output=dt, stats="float32", state=dt),
                           f"{call}; {weights} (policy {dt!r}: variables in {dt}, unlike tf_keras)")
    if backend == "tensorflow":
        f64 = Cited(DtypeRule("yes", output="float64", stats="float64", state="float64"),
                    f"{call}; {_DTYPES}: BIT64_TO_BIT32_DTYPE keeps float64 on the tensorflow backend")
    elif backend == "torch":
        f64 = Cited(DtypeRule("yes", output="float64", stats="float32", state="float64"),
                    f"{_DTYPES}: _lattice_result_type maps float64 -> float32 (BIT64_TO_BIT32_DTYPE, 'aligned with "
                    f"JAX') on every backend but tensorflow, so {call} computes a float64 layer in float32 and "
                    "casts the output back to float64 (observed: float32-level error 4e-7)")
    else:
        f64 = Cited(DtypeRule("yes", output="float32", stats="float32", state="float32"),
                    f"{_DTYPES}: BIT64_TO_BIT32_DTYPE as for torch, and without jax_enable_x64 JAX truncates every "
                    "float64 array to float32 (UserWarning 'Explicitly requested dtype float64 ... truncated'): the "
                    "layer reports dtype float64 but stores and returns float32")
    return {"float16": low("float16"), "bfloat16": low("bfloat16"), "float64": f64}


class _Keras3(BatchNormAdapter):
    backend: str = ""
    families = ("keras",)

    @classmethod
    def numeric_settings(cls) -> dict:
        """TF32 and similar reduced-precision float32 modes off in the backend (bnsuite.adapters.numerics)."""
        from bnsuite.adapters import numerics

        return {"tensorflow": numerics.tensorflow_full_fp32, "jax": numerics.jax_full_fp32,
                "torch": numerics.torch_full_fp32}[cls.backend]()

    @classmethod
    def declare(cls) -> Declaration:
        return _declaration(cls.backend)

    @classmethod
    def unavailable_reason(cls):
        import importlib.util
        import os
        import sys

        missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        if missing:
            return f"not installed: {', '.join(missing)}"
        if "keras" in sys.modules:  # the backend is already fixed for this process
            have = sys.modules["keras"].backend.backend()
        else:
            have = os.environ.get("KERAS_BACKEND", "tensorflow")  # keras' own default
        if have != cls.backend:
            return (f"this process runs keras on the {have!r} backend (KERAS_BACKEND is fixed per process); "
                    f"run `tox -e {cls.id}` or set KERAS_BACKEND={cls.backend}")
        return None

    @classmethod
    def versions(cls):
        import keras

        out = {"keras": keras.__version__}
        mod = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[cls.backend]
        out[mod] = __import__(mod).__version__
        return out

    @classmethod
    def supported_dtypes(cls):
        return ("float32", "float64", "float16", "bfloat16")

    @classmethod
    def device_unavailable_reason(cls, device):
        if device == "cpu":
            return None
        if cls.backend == "tensorflow":
            import tensorflow as tf

            ok = bool(tf.config.list_physical_devices("GPU"))
        elif cls.backend == "jax":
            import jax

            ok = any(d.platform == "gpu" for d in jax.devices())
        else:
            import torch

            ok = torch.cuda.is_available()
        return None if ok else f"no GPU visible to the keras {cls.backend} backend"

    def __init__(self, spec):
        super().__init__(spec)
        import keras

        if keras.backend.backend() != self.backend:
            raise Unsupported(f"keras backend is {keras.backend.backend()!r}, not {self.backend!r}")
        self.keras = keras
        self._device = "gpu:0" if spec.device == "gpu" else "cpu:0"
        if spec.momentum is None and not spec.use_defaults:
            raise Unsupported("keras has no cumulative moving average (momentum=None); declared")
        if not spec.track_running_stats:
            raise Unsupported("keras has no option to skip the moving statistics; declared batch_stats_inference")
        kwargs = {"dtype": spec.dtype}
        if not spec.use_defaults:
            kwargs.update(axis=spec.channel_axis, epsilon=spec.eps, momentum=1.0 - spec.momentum,
                          center=spec.affine, scale=spec.affine)
        elif not spec.channels_last:
            kwargs.update(axis=1)
        # On the torch backend a layer built inside keras.device() gets non-leaf variables and then refuses
        # `trainable = False` (see the probe below); keras-torch places variables on its default device anyway.
        scope = keras.device(self._device) if self.backend != "torch" else contextlib.nullcontext()
        with scope:
            self.layer = keras.layers.BatchNormalization(**kwargs)
            shape = [None] * spec.rank
            shape[spec.channel_axis] = spec.num_features
            self.layer.build(tuple(shape))

    @classmethod
    def probes(cls):
        if cls.backend != "torch":
            return []
        return [Probe("keras_device_scope_then_freeze", Cited(
            "error:RuntimeError",
            "keras/src/backend/torch/core.py: the device scope moves new variables with .to(device), giving non-leaf "
            "tensors; Variable.trainable then sets `self._value.requires_grad = value`, which torch refuses for "
            "non-leaf tensors (observed with keras 3.15.1)"), _device_scope_then_freeze)]

    def _in(self, x):
        return self.keras.ops.convert_to_tensor(np.asarray(x), dtype=self.spec.dtype)

    def _out(self, y) -> np.ndarray:
        return np.asarray(self.keras.ops.convert_to_numpy(y), dtype=np.float64)

    def forward(self, x, training):
        with self.keras.device(self._device):
            y = self.layer(self._in(x)) if training is None else self.layer(self._in(x), training=training)
        self.last_output_dtype = dtype_name(self.keras.backend.standardize_dtype(y.dtype))
        return self._out(y)

    def state_dtypes(self):
        lay = self.layer
        # The backing array, not Variable.dtype: keras-jax without x64 reports "float64" over float32 storage.
        d = lambda w: None if w is None else dtype_name(self.keras.backend.standardize_dtype(w.value.dtype))
        return {"scale": d(lay.gamma), "offset": d(lay.beta), "mean": d(lay.moving_mean),
                "var": d(lay.moving_variance)}

    def backward(self, x, dy, training):
        """Gradient of sum(y * dy) with the backend's own autodiff; the moving statistics are restored after."""
        lay = self.layer
        params = [w for w in (lay.gamma, lay.beta) if w is not None]
        saved = self.get_state()
        try:
            with self.keras.device(self._device):
                dx, dparams = getattr(self, f"_grads_{self.backend}")(x, dy, training, params)
        finally:
            self.set_state(saved)
        f64 = lambda g: np.asarray(self.keras.ops.convert_to_numpy(g), np.float64)
        named = dict(zip([id(w) for w in params], dparams))
        pick = lambda w: None if w is None else f64(named[id(w)])
        return Grads(f64(dx), pick(lay.gamma), pick(lay.beta))

    def _grads_tensorflow(self, x, dy, training, params):
        import tensorflow as tf

        xt, dyt = self._in(x), self._in(dy)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(self.layer(xt, training=training) * dyt)
        grads = tape.gradient(loss, [xt] + params)
        return grads[0], grads[1:]

    def _grads_jax(self, x, dy, training, params):
        import jax
        import jax.numpy as jnp

        lay = self.layer
        trainable = [v.value for v in lay.trainable_variables]
        non_trainable = [v.value for v in lay.non_trainable_variables]
        order = [id(v) for v in lay.trainable_variables]
        dyt = self._in(dy)

        def loss(tv, xt):
            y, _ = lay.stateless_call(tv, non_trainable, xt, training=training)
            return jnp.sum(y * dyt)

        dtv, dx = jax.grad(loss, argnums=(0, 1))(trainable, self._in(x))
        by_id = dict(zip(order, dtv))
        return dx, [by_id[id(w)] for w in params]

    def _grads_torch(self, x, dy, training, params):
        import torch

        xt = self._in(x).detach().requires_grad_(True)
        tensors = [w.value for w in params]
        for t in tensors:
            t.grad = None
        loss = torch.sum(self.layer(xt, training=training) * self._in(dy))
        grads = torch.autograd.grad(loss, [xt] + tensors)
        return grads[0], list(grads[1:])

    def get_state(self) -> State:
        lay = self.layer
        v = lambda w: None if w is None else np.asarray(self.keras.ops.convert_to_numpy(w), np.float64).copy()
        return State(v(lay.gamma), v(lay.beta), v(lay.moving_mean), v(lay.moving_variance))

    def set_state(self, state: State) -> None:
        lay = self.layer
        for var, val in ((lay.gamma, state.scale), (lay.beta, state.offset), (lay.moving_mean, state.mean),
                         (lay.moving_variance, state.var)):
            if var is not None and val is not None:
                var.assign(np.asarray(val).astype(var.dtype))

    def hyperparameters(self):
        lay = self.layer
        return {"eps": lay.epsilon, "momentum": lay.momentum, "channels_last": lay.axis in (-1, self.spec.rank - 1)}

    def frozen_step(self, idiom, x, dy, lr):
        from bnsuite.adapters.keras_fit import fit_step

        if idiom == "torch_module_eval" and self.backend != "torch":
            raise Unsupported("torch_module_eval exists on the torch backend only")
        ops = self.keras.ops
        with self.keras.device(self._device):
            return fit_step(self.keras, self, idiom, x, dy, lr, self._in, ops.convert_to_numpy, ops.sum)

    def snippet(self):
        s = self.spec
        args = "" if s.use_defaults else (f"axis={s.channel_axis}, momentum={1 - (s.momentum or 0):g}, "
                                          f"epsilon={s.eps}, center={s.affine}, scale={s.affine}, ")
        return (f"import os; os.environ['KERAS_BACKEND'] = {self.backend!r}\nimport keras\n"
                f"bn = keras.layers.BatchNormalization({args}dtype={s.dtype!r})")


def _device_scope_then_freeze() -> str:
    """Build a BatchNormalization inside keras.device("cpu:0"), then freeze it."""
    import keras

    with keras.device("cpu:0"):
        bn = keras.layers.BatchNormalization()
        bn.build((None, 3))
    try:
        bn.trainable = False
    except Exception as e:
        return f"error:{type(e).__name__}"
    return "ok"


class KerasTensorFlow(_Keras3):
    id = "keras-tensorflow"
    backend = "tensorflow"
    requires = ("keras", "tensorflow")
    process_env = {"KERAS_BACKEND": "tensorflow"}
    families = ("keras", "tensorflow")


class KerasJax(_Keras3):
    id = "keras-jax"
    backend = "jax"
    requires = ("keras", "jax")
    process_env = {"KERAS_BACKEND": "jax"}
    families = ("keras", "jax")


class KerasTorch(_Keras3):
    id = "keras-torch"
    backend = "torch"
    requires = ("keras", "torch")
    process_env = {"KERAS_BACKEND": "torch"}
    families = ("keras", "torch")
