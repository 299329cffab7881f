"""MLX adapter: mlx.nn.BatchNorm, channels-last (NC, NLC, NHWC), a Module whose running statistics are arrays it
reassigns in training mode. Sources: the installed mlx 0.32.4, mlx/nn/layers/normalization.py (BatchNorm),
mlx/nn/layers/base.py (Module.train/eval/freeze/unfreeze/set_dtype), mlx/nn/utils.py (value_and_grad),
mlx/optimizers/optimizers.py (SGD), confirmed by running it.

Named mlx_bn (not mlx) so that it never shadows the framework itself.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bnsuite.adapters.base import (BatchNormAdapter, Cited, Declaration, DtypeRule, FreezeFacts, FreezeIdiom, Grads,
                                   Probe, State, Unsupported)
from bnsuite.adapters.capabilities import conventional
from bnsuite.adapters.conventions import SlotState
from bnsuite.adapters.frameworks import Framework, OnFramework
from bnsuite.adapters.mixed_precision.mlx_mixed import declared as declared_mixed

_SRC = "mlx/nn/layers/normalization.py"
_BASE = "mlx/nn/layers/base.py"
_CALL = f"{_SRC}: BatchNorm.__call__"
_STATS = f"{_SRC}: BatchNorm._calc_stats"
_UPDATE = (f"{_CALL}: running_mean = (1 - mu) * running_mean + mu * mean; running_var = (1 - mu) * running_var + "
           "mu * var, var from _calc_stats(x, ddof=1)")
_FREEZE = (f"{_BASE}: Module.freeze docstring 'Freezing a parameter means not computing gradients for it' (adds the "
           "keys to _no_grad, which trainable_parameters leaves out); it does not touch Module.training, which alone "
           f"decides the statistics in {_CALL}")
_EVAL = f"{_BASE}: Module.eval = train(False) sets _training on every submodule; {_CALL} reads self.training"
_STEP = ("mlx/nn/utils.py: value_and_grad differentiates model.trainable_parameters(); the step here also "
         "differentiates the input (as a preceding layer would) and applies mlx.optimizers.SGD.update")


def _low(dt: str) -> Cited[DtypeRule]:
    return Cited(DtypeRule("yes", output=dt, stats=dt, state=dt),
                 f"{_BASE}: Module.set_dtype casts weight/bias/running_mean/running_var (floating arrays) to {dt}; "
                 f"{_STATS}: mx.mean and mx.var return the input dtype (sums accumulate wider: mx.sum of 10000 float16 "
                 "ones is 10000, observed) and the update stays in it")


DECLARATION = Declaration(
    framework="mlx",
    default_eps=Cited(1e-5, f"{_SRC}: BatchNorm.__init__(num_features, eps: float = 1e-5, ...)"),
    default_momentum=Cited(0.1, f"{_SRC}: BatchNorm.__init__(..., momentum: float = 0.1)"),
    momentum_weights=Cited("new", _UPDATE),
    default_channels_last=Cited(True, f"{_SRC}: BatchNorm docstring 'The input shape is specified as NC or NLC ... "
                                      f"NHWC'; {_STATS}: reduction_axes = tuple(range(0, x.ndim - 1)) (channels on "
                                      "the last axis, no axis argument)"),
    running_var_estimator=Cited({"default": "unbiased"}, _UPDATE),
    normalize_estimator=Cited("biased", f"{_CALL}: mean, var = self._calc_stats(x) (ddof=0)"),
    single_value_batch=Cited("error:ValueError", f"{_CALL}: 'if stats_size == 1: raise ValueError(\"BatchNorm "
                                                 "training requires more than one value per channel.\")'"),
    single_value_batch_stats_inference=Cited(
        "offset", f"{_CALL}: the one-value check runs only `if self.training`; in eval mode without running "
                  "statistics the batch variance 0 normalizes every value to the offset (observed)"),
    cumulative_average=Cited(False, f"{_UPDATE}: momentum=None makes (1 - mu) raise TypeError (no cumulative "
                                    "average, observed)"),
    batch_stats_inference=Cited("track_running_stats=False",
                                f"{_CALL}: without track_running_stats the batch statistics normalize in every mode"),
    training_default=Cited("module-mode", f"{_BASE}: Module.__init__ sets self._training = True; train()/eval() "
                                          "switch it"),
    variance_algorithm=Cited("two-pass", f"{_STATS}: mx.var (mlx/core ops.cpp var: mean first, then the mean of "
                                         "squared deviations); observed: float32 input of mean 1e3 and spread 1e-2 "
                                         "gives the variance to 2e-5 relative, where E[x^2] - E[x]^2 keeps no digit"),
    freeze={
        "train": Cited(FreezeFacts("batch", True, True), f"{_CALL}: self.training (True after construction) "
                                                         f"normalizes with the batch and updates; {_STEP}"),
        "eval": Cited(FreezeFacts("running", False, True), f"{_EVAL}; weight/bias stay trainable; {_STEP}"),
        "freeze": Cited(FreezeFacts("batch", True, False), f"{_FREEZE}; {_STEP}"),
        "freeze_keys_weight_bias": Cited(FreezeFacts("batch", True, False),
                                         f"{_BASE}: Module.freeze(keys=['weight', 'bias']) as freeze(); {_FREEZE}"),
        "eval_freeze": Cited(FreezeFacts("running", False, False), f"{_EVAL}; {_FREEZE}"),
    },
    precision={
        "float16": _low("float16"),
        "bfloat16": _low("bfloat16"),
        "float64": Cited(DtypeRule("yes", output="float64", stats="float64", state="float64"),
                         f"{_BASE}: Module.set_dtype(mx.float64); the CPU device runs float64 (observed on the Linux "
                         "CPU wheel mlx-cpu 0.32.4)"),
    },
    mixed_precision=declared_mixed(),
)


def _versions() -> dict[str, str]:
    import mlx.core as mx

    return {"mlx": mx.__version__}


def _numeric_settings() -> dict:
    """MLX has no reduced-precision float32 mode on the CPU (no TF32 switch): float32 kernels are float32."""
    import mlx.core as mx

    return {"mlx.core.default_device": str(mx.default_device()), "tf32": "off"}


def _device_reason(device: str) -> str | None:
    if device == "cpu":
        return None
    import mlx.core as mx

    if device == "gpu" and mx.is_available(mx.gpu):
        return None
    return f"no GPU visible to mlx (mx.is_available(mx.gpu) is False, mlx {mx.__version__})"


MLX = Framework(requires=("mlx",), families=("mlx",), pins={"mlx": "0.32.4"}, versions=_versions,
                numeric_settings=_numeric_settings, device_reason=_device_reason)


class MlxRecipe(NamedTuple):
    """How an MLX freeze idiom treats a BatchNorm module, read alike by the lone layer and the networks."""

    eval_mode: bool = False  # module.eval()
    freeze: bool = False  # module.freeze(keys=freeze_keys)
    freeze_keys: tuple[str, ...] | None = None  # None: every parameter


FREEZE_IDIOMS = {
    "train": FreezeIdiom(MlxRecipe()),
    "eval": FreezeIdiom(MlxRecipe(eval_mode=True)),
    "freeze": FreezeIdiom(MlxRecipe(freeze=True)),
    "freeze_keys_weight_bias": FreezeIdiom(MlxRecipe(freeze=True, freeze_keys=("weight", "bias"))),
    "eval_freeze": FreezeIdiom(MlxRecipe(eval_mode=True, freeze=True)),
}


def freeze_module(how: MlxRecipe, bn) -> None:
    """Apply the recipe to one BatchNorm module (train mode unless the recipe says eval)."""
    bn.train(not how.eval_mode)
    if how.freeze:
        bn.freeze(keys=list(how.freeze_keys) if how.freeze_keys else None)


def _float64_ndarray_dtype() -> str:
    """The dtype mx.array gives a float64 NumPy array when no dtype is named."""
    import mlx.core as mx

    return mx_dtype_name(mx.array(np.array([1 / 3], np.float64)).dtype)


# Fresh processes that reduce a (0, 3) array over its empty axis 100 times; a hung one spins until killed.
_EMPTY_AXIS_SUM = """import numpy as np, mlx.core as mx
x = mx.array(np.zeros((0, 3), np.float32))
for i in range(100):
    mx.eval(mx.sum(x, axis=0))"""


def _empty_axis_sum() -> str:
    """"hangs" when one of up to 8 fresh processes (one at a time) does not finish its reductions within 2 s (about
    half do, on mlx 0.32.4's CPU), else "returns"."""
    import subprocess
    import sys

    for _ in range(8):
        try:
            subprocess.run([sys.executable, "-c", _EMPTY_AXIS_SUM], capture_output=True, timeout=2, check=True)
        except subprocess.TimeoutExpired:
            return "hangs"
    return "returns"


def mx_dtype(mx, name: str):
    try:
        return getattr(mx, name)
    except AttributeError:
        raise Unsupported(f"mlx: unknown dtype {name!r}") from None


def mx_array(value, dtype):
    """NumPy -> mx.array in `dtype`, through float64 with the dtype named: mx.array(float64 ndarray) alone gives
    float32 (mlx/core/__init__.pyi: array; observed), which would round float64 layers' inputs and state."""
    import mlx.core as mx

    wide = mx.float64 if dtype == mx.float64 else mx.float32
    return mx.array(np.ascontiguousarray(np.asarray(value, np.float64)), dtype=wide).astype(dtype)


def mx_numpy(a) -> np.ndarray:
    """mx.array -> float64 NumPy, widened through float32 (which holds every float16 and bfloat16 value) or float64."""
    import mlx.core as mx

    wide = mx.float64 if a.dtype == mx.float64 else mx.float32
    return np.array(a.astype(wide), dtype=np.float64)


def mx_dtype_name(dtype) -> str:
    """mlx.core.float16 -> "float16"."""
    return str(dtype).rpartition(".")[2]


class MlxBatchNorm(OnFramework, SlotState, BatchNormAdapter):
    id = "mlx"
    runs_on = MLX
    capabilities = {**conventional("mlx", "network", "norms", "blocks", "compile", "mixed_precision"),
                    "edge_facts": "bnsuite.adapters.mlx_edge_facts:MLX",
                    "replicas": "bnsuite.adapters.replicas.mlx_dist:MlxReplicas"}
    freeze_idioms = FREEZE_IDIOMS
    declaration = DECLARATION

    @classmethod
    def probes(cls):
        return [Probe("mlx_array_float64_ndarray_dtype", Cited(
            "float32", "mlx/core/__init__.pyi: array(val, dtype=None) infers float32 for floating input unless dtype "
                       "names float64 (ml-explore/mlx#1995, maintainer: 'If you want a float64 array you have to "
                       "explicitly ask for it'); observed with mlx 0.32.4"), _float64_ndarray_dtype),
                Probe("mlx_empty_axis_reduction", Cited(
                    "hangs", "observed with mlx 0.32.4 on the Linux CPU wheel: mx.sum / mx.var / mx.prod of a (0, C) "
                             "array over axis 0, evaluated repeatedly, stop returning in about half of fresh "
                             "processes (spinning); a full reduction (mx.sum(x)) and elementwise ops do not (finding "
                             "mlx_empty_axis_reduction_hangs)"), _empty_axis_sum)]

    # -- build -------------------------------------------------------------------------------------------------------
    def __init__(self, spec):
        super().__init__(spec)
        import mlx.core as mx
        import mlx.nn as nn

        if spec.rank not in (2, 3, 4):
            raise Unsupported(f"mlx: BatchNorm takes 2, 3 or 4 dimensions (NC, NLC, NHWC), not rank {spec.rank} "
                              f"({_CALL} raises ValueError)")
        if spec.momentum is None and not spec.use_defaults:
            raise Unsupported("mlx has no cumulative moving average (momentum=None); declared")
        self.mx, self.nn = mx, nn
        self.dt = mx_dtype(mx, spec.dtype)
        self.kwargs = {} if spec.use_defaults else dict(eps=spec.eps, momentum=spec.momentum, affine=spec.affine,
                                                        track_running_stats=spec.track_running_stats)
        self.module = nn.BatchNorm(spec.num_features, **self.kwargs)
        if spec.dtype != "float32":
            self.module.set_dtype(self.dt)
        # Channels-first specs: the user moves the channels to the last axis, the only one MLX normalizes over.
        self.transpose = not spec.channels_last and spec.rank > 2

    # -- layout ------------------------------------------------------------------------------------------------------
    def _in(self, x: np.ndarray):
        x = np.moveaxis(x, 1, -1) if self.transpose else x
        return self._array(x, self.dt)

    _array = staticmethod(mx_array)
    _np = staticmethod(mx_numpy)

    def _out(self, a) -> np.ndarray:
        y = self._np(a)
        return np.moveaxis(y, -1, 1) if self.transpose else y

    # -- forward / state ---------------------------------------------------------------------------------------------
    def forward(self, x, training):
        if training is not None:
            self.module.train(training)
        y = self.module(self._in(x))
        self.mx.eval(y, self.module.parameters())
        self.last_output_dtype = mx_dtype_name(y.dtype)
        return self._out(y)

    def _slot(self, name):
        """The module attribute that holds the slot, None where the module has none."""
        attr = {"scale": "weight", "offset": "bias", "mean": "running_mean", "var": "running_var"}[name]
        return None if self.module.get(attr) is None else attr

    def _read(self, attr):
        return self._np(self.module[attr])

    def _write(self, attr, value):
        setattr(self.module, attr, self._array(value, self.module[attr].dtype))

    def _dtype(self, attr):
        return mx_dtype_name(self.module[attr].dtype)

    def hyperparameters(self):
        return {"eps": self.module.eps, "momentum": self.module.momentum, "channels_last": True}

    def _loss_and_grads(self, x, dy):
        """sum(y * dy) and its gradients with respect to the trainable parameters and the input (nn.value_and_grad's
        own recipe: update the module with the traced parameters, then call it)."""
        mx, m = self.mx, self.module
        xt, dyt = self._in(x), self._in(dy)
        box = {}

        def loss(params, inp):
            m.update(params)
            y = m(inp)
            box["y"] = y
            return (y * dyt).sum()

        value, (gparams, gx) = mx.value_and_grad(loss, argnums=(0, 1))(m.trainable_parameters(), xt)
        mx.eval(value, gparams, gx, box["y"], m.parameters())
        return box["y"], gparams, gx

    def backward(self, x, dy, training):
        m = self.module
        saved = self.get_state()
        was_training = m.training
        m.train(training)
        _, gparams, gx = self._loss_and_grads(x, dy)
        m.train(was_training)
        self.set_state(State(None, None, saved.mean, saved.var))
        g = lambda k: None if k not in gparams else self._np(gparams[k])
        return Grads(self._out(gx), g("weight"), g("bias"))

    # -- freeze ------------------------------------------------------------------------------------------------------
    def frozen_step(self, idiom, x, dy, lr):
        import mlx.optimizers as optim

        m = self.module
        freeze_module(self.freeze_recipe(idiom), m)
        opt = optim.SGD(learning_rate=lr)
        y, gparams, _ = self._loss_and_grads(x, dy)
        opt.update(m, gparams)
        self.mx.eval(m.parameters(), opt.state)
        return self._out(y)

    def snippet(self) -> str:
        s = self.spec
        args = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        cast = "" if s.dtype == "float32" else f"\nbn.set_dtype(mx.{s.dtype})"
        return (f"import mlx.core as mx\nimport mlx.nn as nn\nbn = nn.BatchNorm({s.num_features}{args}){cast}\n"
                "# x channels-last (NC, NLC or NHWC)\nbn.train(); y = bn(x)")
