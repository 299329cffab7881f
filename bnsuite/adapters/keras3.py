"""Keras 3 adapters: keras.layers.BatchNormalization on the tensorflow, jax and torch backends.

Keras fixes its backend once per process from KERAS_BACKEND, so each backend is its own adapter id and runs in its own
process (tox env). Sources cited below are keras-team/keras @ 3422977a (keras/src/...).
"""

from __future__ import annotations

import contextlib

import numpy as np

from bnsuite.adapters.base import Cited, Declaration, DtypeRule, FreezeFacts, Probe, Unsupported, dtype_name
from bnsuite.adapters.flax_common import FLAX
from bnsuite.adapters.frameworks import Framework
from bnsuite.adapters.keras_family import KerasLayerAdapter, keras_api_declaration, tf_gpu_reason
from bnsuite.adapters.keras_fit import TORCH_IDIOMS
from bnsuite.adapters.mixed_precision import keras_mixed
from bnsuite.adapters.tf_keras_v2 import TF_KERAS
from bnsuite.adapters.torch_bn import TORCH

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
    return keras_api_declaration(
        _BN, _BN, freeze=freeze,
        precision=_precision(backend),
        mixed_precision=keras_mixed.declared_keras3(backend),
        framework=f"keras 3 ({backend} backend)",
        momentum_weights=Cited("old", f"{_BN}: call(), moving_mean * self.momentum + mean * (1.0 - self.momentum)"),
        running_var_estimator=Cited({"default": "biased"}, f"{_BN}: _moments -> ops.moments; {moments_src}"),
        normalize_estimator=Cited("biased", moments_src),
        single_value_batch=Cited("offset", f"{_BN}: no batch-size check; a single value has variance 0, "
                                           "so (x - mean) = 0 and the output is beta"),
        variance_algorithm=Cited({"tensorflow": "two-pass", "jax": "two-pass", "torch": "one-pass-unclamped"}[backend],
                                 moments_src),
        training_default=Cited("inference", "keras/src/layers/layer.py: training resolution ends with "
                                            "'(5) False (treating the layer as if it's in inference)'"),
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


# Keras 3 itself; an adapter runs on it AND on its backend's row (its pins, numeric settings).
KERAS = Framework(requires=("keras",), families=("keras",), pins={"keras": "3.15.1"})
BACKEND_ROWS = {"tensorflow": TF_KERAS, "jax": FLAX, "torch": TORCH}


class _Keras3(KerasLayerAdapter):
    """Keras 3 on the backend named by `backend`; a subclass that names one gets its requirements, process switch,
    family markers and framework rows from it (unless it sets them itself)."""

    backend: str = ""
    families = ("keras",)
    capabilities = {
        "network": "bnsuite.adapters.nets.keras_net:build",
        "norms": "bnsuite.adapters.norms.keras_norms:Keras3Norms",
        "mixed_precision": "bnsuite.adapters.mixed_precision.keras_mixed:keras3_step",
        "training_loops": "bnsuite.lanes.loops.keras_loops:KerasLoops",
        "models": "bnsuite.models.keras_models:MODELS",
    }

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.backend:
            derived = {"requires": ("keras", cls.backend), "process_env": {"KERAS_BACKEND": cls.backend},
                       "families": ("keras", cls.backend), "rows": (KERAS, BACKEND_ROWS[cls.backend])}
            for name, value in derived.items():
                if name not in cls.__dict__:
                    setattr(cls, name, value)

    @classmethod
    def numeric_settings(cls) -> dict:
        """TF32 and similar reduced-precision float32 modes off in the backend (bnsuite.adapters.numerics)."""
        return BACKEND_ROWS[cls.backend].numeric_settings()

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

        return {"keras": keras.__version__, cls.backend: __import__(cls.backend).__version__}

    @classmethod
    def device_unavailable_reason(cls, device):
        if device == "cpu":
            return None
        if cls.backend == "tensorflow":
            return tf_gpu_reason(device)
        if cls.backend == "jax":
            import jax

            ok = any(d.platform == "gpu" for d in jax.devices())
        else:
            import torch

            ok = torch.cuda.is_available()
        return None if ok else f"no GPU visible to the keras {cls.backend} backend"

    def __init__(self, spec):
        import keras

        if keras.backend.backend() != self.backend:
            raise Unsupported(f"keras backend is {keras.backend.backend()!r}, not {self.backend!r}")
        self.keras = keras
        self._device = "gpu:0" if spec.device == "gpu" else "cpu:0"
        super().__init__(spec)

    @classmethod
    def probes(cls):
        if cls.backend != "torch":
            return []
        return [Probe("keras_device_scope_then_freeze", Cited(
            "error:RuntimeError",
            "keras/src/backend/torch/core.py: the device scope moves new variables with .to(device), giving non-leaf "
            "tensors; Variable.trainable then sets `self._value.requires_grad = value`, which torch refuses for "
            "non-leaf tensors (observed with keras 3.15.1)"), _device_scope_then_freeze)]

    # -- the Keras 3 names ---------------------------------------------------------------------------------------------
    def _keras(self):
        return self.keras

    def _layer_class(self):
        return self.keras.layers.BatchNormalization

    def _scope(self):
        return self.keras.device(self._device)

    def _build_scope(self):
        # On the torch backend a layer built inside keras.device() gets non-leaf variables and then refuses
        # `trainable = False` (see the probe below); keras-torch places variables on its default device anyway.
        return self._scope() if self.backend != "torch" else contextlib.nullcontext()

    def _in(self, x):
        return self.keras.ops.convert_to_tensor(np.asarray(x), dtype=self.spec.dtype)

    def _to_numpy(self, t):
        return self.keras.ops.convert_to_numpy(t)

    def _reduce_sum(self, t):
        return self.keras.ops.sum(t)

    def _mask_in(self, mask):
        return self.keras.ops.convert_to_tensor(np.asarray(mask, bool))

    def _numpy_dtype(self, var):
        return var.dtype

    def _var_dtype(self, var):
        # The backing array, not Variable.dtype: keras-jax without x64 reports "float64" over float32 storage.
        return dtype_name(self.keras.backend.standardize_dtype(var.value.dtype))

    def _tensor_dtype(self, t):
        return dtype_name(self.keras.backend.standardize_dtype(t.dtype))

    def _grads(self, x, dy, training, params):
        return getattr(self, f"_grads_{self.backend}")(x, dy, training, params)

    def _grads_tensorflow(self, x, dy, training, params):
        return self._grads_tape(x, dy, training, params)

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

    @property
    def snippet_head(self):
        return f"import os; os.environ['KERAS_BACKEND'] = {self.backend!r}\nimport keras\n"

    snippet_class = "keras.layers.BatchNormalization"


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


def _on_backend(blocks: str, replicas: str, edge_facts: str) -> dict[str, str]:
    """The capabilities of Keras 3 on one backend: Keras 3's own plus the backend's blocks, replica engine (a module of
    bnsuite.adapters.replicas) and edge-fact table."""
    return {**_Keras3.capabilities, "blocks": f"bnsuite.adapters.blocks.keras_blocks:{blocks}",
            "replicas": f"bnsuite.adapters.replicas.{replicas}",
            "edge_facts": f"bnsuite.adapters.edge_facts:{edge_facts}"}


class KerasTensorFlow(_Keras3):
    id, backend = "keras-tensorflow", "tensorflow"
    capabilities = {**_on_backend("Keras3TensorFlowBlocks", "tf_mirrored:KerasTensorFlowReplicas", "KERAS_TENSORFLOW"),
                    "deploy": "bnsuite.lanes.deploy.keras_deploy:Keras3Deploy",
                    "compile": "bnsuite.lanes.compile.keras_compile:KerasCompileTensorFlow"}


class KerasJax(_Keras3):
    id, backend = "keras-jax", "jax"
    capabilities = {**_on_backend("Keras3Blocks", "keras_sync:KerasJaxReplicas", "KERAS_JAX"),
                    "compile": "bnsuite.lanes.compile.keras_compile:KerasCompileJax"}


class KerasTorch(_Keras3):
    id, backend = "keras-torch", "torch"
    capabilities = {**_on_backend("Keras3Blocks", "keras_sync:KerasTorchSync", "KERAS_TORCH"),
                    "compile": "bnsuite.lanes.compile.keras_compile:KerasCompileTorch",
                    "deploy": "bnsuite.lanes.deploy.keras_deploy:Keras3TorchDeploy"}
    freeze_idioms = TORCH_IDIOMS
