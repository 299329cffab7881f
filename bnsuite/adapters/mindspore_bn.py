"""MindSpore adapter: mindspore.nn.BatchNorm1d/2d/3d in PyNative mode on the CPU.

Named mindspore_bn (not mindspore) so that it never shadows the framework itself. Sources: the installed mindspore
2.10.0 (mindspore/nn/layer/normalization.py: _BatchNorm, mindspore/nn/cell.py: Cell, the BatchNorm primitive in
mindspore/ops/operations/manually_defined/ops_def.py), confirmed by running it; the CPU kernel itself ships compiled.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from typing import NamedTuple

import numpy as np

from bnsuite.adapters.base import (BatchNormAdapter, Cited, Declaration, DtypeRule, FreezeFacts, FreezeIdiom, Grads,
                                   Probe, Unsupported)
from bnsuite.adapters.capabilities import conventional
from bnsuite.adapters.conventions import SlotState
from bnsuite.adapters.frameworks import Framework, OnFramework
from bnsuite.adapters.import_order import ImportTrap, import_after
from bnsuite.adapters.mixed_precision.mindspore_mixed import declared as declared_mixed

_LAYER = "mindspore/nn/layer/normalization.py"
_INIT = f"{_LAYER}: _BatchNorm.__init__"
_CONSTRUCT = f"{_LAYER}: _BatchNorm.construct"
_CELL = "mindspore/nn/cell.py"
_PRIM = "mindspore/ops/operations/manually_defined/ops_def.py: BatchNorm"
_UBS = (f"{_CONSTRUCT}: use_batch_statistics None -> bn_train if self.training else bn_infer; True -> bn_train "
        "(batch statistics, running statistics updated) in every mode; False -> bn_infer in every mode")
_STEP = ("mindspore/ops/function/grad/grad_func.py: value_and_grad(fn, grad_position=0, weights="
         f"cell.trainable_params()); {_CELL}: Cell.trainable_params leaves out parameters with requires_grad=False; "
         "the step applies mindspore.nn.SGD to the gradients (none where no parameter is trainable)")
_UPDATE = (f"{_INIT}: self.momentum = 1.0 - momentum, passed to ops.BatchNorm(is_training=True, momentum=...); "
           f"{_PRIM} docstring 'new_running_mean = (1 - momentum) * running_mean + momentum * current_mean'")

DECLARATION = Declaration(
    framework="mindspore",
    default_eps=Cited(1e-5, f"{_INIT}(eps=1e-5)"),
    default_momentum=Cited(0.9, f"{_INIT}(momentum=0.9); BatchNorm2d docstring 'moving_mean = moving_mean * "
                                "momentum + mu_beta * (1 - momentum)' (the layer's own `momentum` attribute holds "
                                "1 - momentum: 0.1 for the default, probe momentum_attribute_of_default)"),
    momentum_weights=Cited("old", _UPDATE),
    default_channels_last=Cited(False, f"{_INIT}(data_format='NCHW'); 'NHWC' raises ValueError unless "
                                       "device_target is GPU ('the NHWC format only support in GPU target')"),
    normalize_estimator=Cited("biased", f"{_PRIM} docstring 'y = (x - mean) / sqrt(variance + epsilon)', the batch "
                                        "variance without correction (observed)"),
    running_var_estimator=Cited({"default": "unbiased"},
                                f"{_PRIM} (CPU kernel, compiled): the running variance takes the batch variance with "
                                "Bessel's correction, observed with mindspore 2.10.0 (running var = 0.9 + 0.1 * "
                                "var(ddof=1) from ones); the BatchNorm2d docstring writes sigma^2_beta without saying"),
    single_value_batch=Cited("offset", f"{_CONSTRUCT}: no check of the batch size; the batch variance of one value "
                                       "is 0 so every output is beta (observed), and the running variance becomes NaN "
                                       "(probe single_value_batch_running_var)"),
    cumulative_average=Cited(False, f"{_INIT}: `if momentum < 0 or momentum > 1` raises TypeError for None"),
    batch_stats_inference=Cited("use_batch_statistics=True",
                                f"{_UBS}; so inference with batch statistics also moves the running statistics (the "
                                "adapter restores them after an inference call)"),
    training_default=Cited("inference", f"{_CELL}: Cell.__init__ sets training False (a new cell runs bn_infer, the "
                                        "running statistics); Cell.set_train(mode=True) switches it, there is no "
                                        "`training` argument to the call"),
    variance_algorithm=Cited("two-pass", f"{_PRIM} (CPU kernel, compiled): observed with mindspore 2.10.0, float32 "
                                         "inputs of mean 1e4 and spread 1 give the variance to 1e-5 relative, where "
                                         "float32 E[x^2] - E[x]^2 keeps no digit"),
    freeze={
        "train": Cited(FreezeFacts("batch", True, True), f"{_CELL}: Cell.set_train(True); {_UBS}; {_STEP}"),
        "eval": Cited(FreezeFacts("running", False, True),
                      f"{_CELL}: Cell.set_train(False) -> bn_infer, no update; gamma/beta keep requires_grad=True; "
                      f"{_STEP}"),
        "requires_grad_false": Cited(FreezeFacts("batch", True, False),
                                     f"{_INIT}: gamma/beta Parameter(requires_grad=affine); requires_grad=False only "
                                     f"takes them out of trainable_params, {_CONSTRUCT} still runs bn_train; {_STEP}"),
        "eval_requires_grad_false": Cited(FreezeFacts("running", False, False),
                                          f"{_CELL}: Cell.set_train(False) and requires_grad=False; {_STEP}"),
        "use_batch_statistics_false": Cited(FreezeFacts("running", False, True),
                                            f"{_UBS}; the layer in set_train(True) still normalizes with the running "
                                            f"statistics and keeps them; {_STEP}"),
    },
    precision={
        "float16": Cited(DtypeRule("yes", output="float16", stats="float32", state="float16"),
                         f"{_INIT}(dtype=mstype.float16) builds the four parameters in float16; {_PRIM} docstring "
                         "'input_x ... with float16 or float32 data type'; the statistics are accumulated wider than "
                         "float16 (observed within float32 bounds). The running statistics do NOT move in a float16 "
                         "training step (probe float16_training_updates_running_stats)"),
        "bfloat16": Cited(DtypeRule("error:TypeError"),
                          f"{_INIT}(dtype=mstype.bfloat16): initializer() fills through NumPy, which raises TypeError "
                          "'The Numpy bfloat16 data type is not supported now'; a bfloat16 input to a float32 layer "
                          f"raises TypeError in {_PRIM} (float16 or float32 only)"),
        "float64": Cited(DtypeRule("error:TypeError"),
                         f"{_PRIM}: 'the input argument[input_x] must be a type of {{Tensor[Float16], "
                         "Tensor[Float32]}, but got Tensor[Float64]' (the layer builds, its first call raises)"),
    },
    mixed_precision=declared_mixed(),
    notes={"momentum_attribute": f"{_INIT}: self.momentum = 1.0 - momentum: the attribute reads 0.1 for the default "
                                 "argument 0.9 (the weight of the NEW value, torch's convention), while the argument "
                                 "weights the old value; extend_repr prints 1 - self.momentum"},
)


def _versions() -> dict[str, str]:
    import mindspore

    return {"mindspore": mindspore.__version__}


def _numeric_settings() -> dict:
    """PyNative mode on the CPU: no TF32-like switch exists for the CPU kernels."""
    import mindspore

    return {"mindspore.get_context('mode')": mindspore.get_context("mode"),
            "device_target": mindspore.get_context("device_target"), "tf32": "off"}


def _device_reason(device: str) -> str | None:
    if device == "cpu":
        return None
    import mindspore

    return (f"no GPU visible to mindspore (the installed mindspore {mindspore.__version__} wheel is the CPU build; "
            f"device_target {mindspore.get_context('device_target')})")


# import_first: `import paddle; import mindspore` fails (ImportError: libmindspore_ops_cpu.so: undefined symbol
# dnnl_threadpool_interop_stream_create: paddle's oneDNN is loaded first); `import mindspore; import paddle` works, and
# so do TensorFlow, torch and JAX in either order (mindspore 2.10.0, paddlepaddle 3.3.1, observed). Rank 2: before
# paddle's import_first (True, rank 1).
MINDSPORE = Framework(requires=("mindspore",), families=("mindspore",), pins={"mindspore": "2.10.0"},
                      versions=_versions, numeric_settings=_numeric_settings, device_reason=_device_reason,
                      import_first=2)


class MindsporeRecipe(NamedTuple):
    """How a MindSpore freeze idiom treats every BatchNorm cell, read alike by the lone layer and the networks."""

    eval_mode: bool = False  # cell.set_train(False)
    requires_grad_false: bool = False  # gamma.requires_grad = beta.requires_grad = False
    batch_statistics: bool | None = None  # the layer built with use_batch_statistics=<this>


FREEZE_IDIOMS = {
    "train": FreezeIdiom(MindsporeRecipe()),
    "eval": FreezeIdiom(MindsporeRecipe(eval_mode=True)),
    "requires_grad_false": FreezeIdiom(MindsporeRecipe(requires_grad_false=True)),
    "eval_requires_grad_false": FreezeIdiom(MindsporeRecipe(eval_mode=True, requires_grad_false=True)),
    "use_batch_statistics_false": FreezeIdiom(MindsporeRecipe(batch_statistics=False)),
}


def freeze_cells(how: MindsporeRecipe, bns: list) -> None:
    """Apply the recipe to the BatchNorm cells `bns` (use_batch_statistics is a build argument, applied there)."""
    for bn in bns:
        bn.set_train(not how.eval_mode)
        if how.requires_grad_false:
            bn.gamma.requires_grad = False
            bn.beta.requires_grad = False


# An op taking a tuple of ints (reshape, transpose, sum over axes) first run in a process whose NumPy is 2.x: the
# extension module, built against NumPy 1.x, fails to load NumPy's C API once and raises SystemError.
_FIRST_TUPLE_OP = """import numpy as np, mindspore as ms
t = ms.Tensor(np.ones((2, 3), np.float32))
out = []
for _ in range(2):
    try:
        ms.ops.reshape(t, (3, 2)); out.append("ok")
    except SystemError:
        out.append("SystemError")
print(" then ".join(out))"""

_warmed = False


def warm_up(ms) -> None:
    """Absorb the one SystemError of the first tuple-argument op under NumPy 2 (probe numpy2_first_tuple_op), as a
    user's first BatchNorm1d call would otherwise raise it."""
    global _warmed
    if _warmed:
        return
    _warmed = True
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    try:
        ms.ops.reshape(ms.Tensor(np.ones((2, 3), np.float32)), (3, 2))
    except SystemError:
        pass


def _first_tuple_op() -> str:
    try:
        proc = subprocess.run([sys.executable, "-c", _FIRST_TUPLE_OP], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return "timeout"
    return proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else \
        f"exit {proc.returncode}"


def _single_value_running_var() -> str:
    """One training call on one value per channel: is the running variance still finite?"""
    import mindspore as ms

    warm_up(ms)
    bn = ms.nn.BatchNorm2d(3)
    bn.set_train(True)
    bn(ms.Tensor(np.array([1.0, 2.0, 3.0], np.float32).reshape(1, 3, 1, 1)))
    return "nan" if np.isnan(bn.moving_variance.asnumpy()).any() else "finite"


def _float16_updates_running_stats() -> str:
    import mindspore as ms

    warm_up(ms)
    bn = ms.nn.BatchNorm2d(3, dtype=ms.float16)
    bn.set_train(True)
    x = np.random.default_rng(0).normal(2.0, 3.0, (4, 3, 2, 2)).astype(np.float16)
    bn(ms.Tensor(x))
    moved = np.any(bn.moving_mean.asnumpy() != 0.0) or np.any(bn.moving_variance.asnumpy() != 1.0)
    return "running stats move" if moved else "running stats unchanged"


def _momentum_attribute() -> str:
    import mindspore as ms

    return f"{ms.nn.BatchNorm2d(3).momentum:.6g}"


# rank -> layer class (NCHW only on the CPU: channels-last specs are transposed by the adapter)
_CLASSES = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}


def ms_dtype(ms, name: str):
    return getattr(ms, name)


def ms_tensor(ms, x: np.ndarray, dtype: str):
    """NumPy -> a MindSpore tensor in `dtype` (bfloat16 through float32: NumPy has no bfloat16)."""
    x = np.ascontiguousarray(x)
    if dtype == "bfloat16":
        return ms.Tensor(x.astype(np.float32)).astype(ms.bfloat16)
    return ms.Tensor(x.astype(dtype))


def ms_numpy(ms, t) -> np.ndarray:
    """A MindSpore tensor or parameter -> float64 NumPy (bfloat16 widened through float32)."""
    if t.dtype == ms.bfloat16:
        t = t.astype(ms.float32)
    return np.asarray(t.asnumpy(), np.float64)


def dtype_str(t) -> str:
    """Float16 -> "float16"."""
    return str(t.dtype).lower()


class MindsporeBatchNorm(ImportTrap, OnFramework, SlotState, BatchNormAdapter):
    id = "mindspore"
    runs_on = MINDSPORE
    capabilities = conventional("mindspore", "network", "edge_facts", "norms", "mixed_precision", "compile")
    freeze_idioms = FREEZE_IDIOMS
    declaration = DECLARATION
    import_trap = ("paddle", "paddle", "fails", "import_after_paddle")

    @classmethod
    def probes(cls):
        probes = [
            Probe("single_value_batch_running_var", Cited(
                "nan", f"{_CONSTRUCT}: no batch-size check; the unbiased batch variance of one value is 0/0 "
                       "(observed with mindspore 2.10.0 on the CPU; finding mindspore_single_value_nan_running_var)"),
                _single_value_running_var),
            Probe("float16_training_updates_running_stats", Cited(
                "running stats unchanged", f"{_PRIM} (CPU kernel, compiled): a float16 layer (dtype=mstype.float16) "
                                           "in set_train(True) normalizes with the batch but leaves moving_mean and "
                                           "moving_variance as they were (observed with mindspore 2.10.0; finding "
                                           "mindspore_float16_running_stats_frozen)"),
                _float16_updates_running_stats),
            Probe("momentum_attribute_of_default", Cited("0.1", DECLARATION.notes["momentum_attribute"]),
                  _momentum_attribute),
        ]
        if int(np.__version__.split(".")[0]) >= 2:  # the trap needs NumPy 2 beside the NumPy-1 build
            probes.append(Probe("numpy2_first_tuple_op", Cited(
                "SystemError then ok", "observed with mindspore 2.10.0 (Requires-Dist numpy>=1.25.0) and numpy "
                                       f"{np.__version__}: the first ops.reshape/transpose/sum with a tuple argument "
                                       "in a process raises SystemError ('A module that was compiled using NumPy 1.x "
                                       "cannot be run in NumPy 2'), the next one works; finding "
                                       "mindspore_numpy2_first_tuple_op_fails"), _first_tuple_op))
        if importlib.util.find_spec("paddle") is not None:  # the trap needs paddle installed beside mindspore
            probes.append(Probe("import_after_paddle", Cited(
                "error:ImportError", "observed with paddlepaddle 3.3.1 and mindspore 2.10.0 on Linux x86-64: "
                "`import paddle; import mindspore` raises ImportError (libmindspore_ops_cpu.so: undefined symbol "
                "dnnl_threadpool_interop_stream_create, paddle's oneDNN loaded first) while `import mindspore; "
                "import paddle` works"), lambda: import_after("paddle", "mindspore")))
        return probes

    # -- build -------------------------------------------------------------------------------------------------------
    def __init__(self, spec):
        super().__init__(spec)
        import mindspore as ms

        self.ms = ms
        warm_up(ms)
        if spec.rank not in _CLASSES:
            raise Unsupported(f"mindspore: no BatchNorm for rank {spec.rank}")
        if spec.device != "cpu":
            raise Unsupported(f"mindspore: the adapter runs the CPU build only, not {spec.device}")
        if spec.momentum is None and not spec.use_defaults:
            raise Unsupported("mindspore has no cumulative moving average (momentum=None); declared")
        # The CPU layer is NCHW only: channels-last data is moved to axis 1, as a user on the CPU must.
        self.transpose = spec.channels_last and spec.rank > 2
        self.kwargs = {}
        if not spec.use_defaults:
            self.kwargs.update(eps=spec.eps, momentum=1.0 - spec.momentum)
            if not spec.affine:
                self.kwargs["affine"] = False
            if not spec.track_running_stats:
                self.kwargs["use_batch_statistics"] = True
        self.cls_name = _CLASSES[spec.rank]
        self.bn = self._build()

    def _build(self, **extra):
        kwargs = {**self.kwargs, **extra}
        if self.spec.dtype != "float32":
            kwargs["dtype"] = ms_dtype(self.ms, self.spec.dtype)
        return getattr(self.ms.nn, self.cls_name)(self.spec.num_features, **kwargs)

    @property
    def core(self):
        """The cell holding the parameters: BatchNorm3d wraps a BatchNorm2d (`bn2d`) over (N, C, D*H, W)."""
        return self.bn.bn2d if self.cls_name == "BatchNorm3d" else self.bn

    def _in(self, x):
        return ms_tensor(self.ms, np.moveaxis(x, -1, 1) if self.transpose else x, self.spec.dtype)

    def _out(self, t) -> np.ndarray:
        y = ms_numpy(self.ms, t)
        return np.moveaxis(y, 1, -1) if self.transpose else y

    # -- forward / state ---------------------------------------------------------------------------------------------
    def forward(self, x, training):
        bn = self.bn
        if training is not None:
            bn.set_train(training)
        # use_batch_statistics=True updates them in inference too: declared, then undone
        with self.running_stats_kept(not self.core.training and not self.spec.track_running_stats):
            y = bn(self._in(x))
        self.last_output_dtype = dtype_str(y)
        return self._out(y)

    def _slot(self, name):
        if name in ("scale", "offset") and not self.spec.affine and not self.spec.use_defaults:
            return None  # affine=False keeps gamma=1, beta=0 as parameters that never train
        core = self.core
        return {"scale": core.gamma, "offset": core.beta, "mean": core.moving_mean, "var": core.moving_variance}[name]

    def _read(self, p):
        return ms_numpy(self.ms, p)

    def _write(self, p, value):
        p.set_data(ms_tensor(self.ms, value, dtype_str(p)))

    def _dtype(self, p):
        return dtype_str(p)

    def hyperparameters(self):
        # The attribute holds 1 - momentum (declared note momentum_attribute): the argument is 1 - attribute.
        core = self.core
        return {"eps": core.eps, "momentum": 1.0 - core.momentum, "channels_last": core.format == "NHWC"}

    def _value_and_grads(self, x, dy):
        """sum(y * dy), y, the input gradient and the trainable parameters' gradients (mindspore.value_and_grad)."""
        ms, bn = self.ms, self.bn
        weights = bn.trainable_params()
        dyt = self._in(dy)

        def loss(xt):
            y = bn(xt)
            return (y * dyt).sum(), y

        if weights:
            (_, y), (gx, gw) = ms.value_and_grad(loss, grad_position=0, weights=weights, has_aux=True)(self._in(x))
        else:
            (_, y), gx = ms.value_and_grad(loss, grad_position=0, has_aux=True)(self._in(x))
            gw = ()
        return y, gx, dict(zip([p.name for p in weights], gw)), weights

    def backward(self, x, dy, training):
        bn = self.core
        was_training = bn.training
        bn.set_train(training)
        with self.running_stats_kept():
            _, gx, gw, _ = self._value_and_grads(x, dy)
        bn.set_train(was_training)
        g = lambda p: None if p.name not in gw else ms_numpy(self.ms, gw[p.name])
        affine = self.spec.affine or self.spec.use_defaults
        return Grads(self._out(gx), g(bn.gamma) if affine else None, g(bn.beta) if affine else None)

    # -- freeze ------------------------------------------------------------------------------------------------------
    def frozen_step(self, idiom, x, dy, lr):
        recipe = self.freeze_recipe(idiom)
        if recipe.batch_statistics is not None:
            self.rebuild_keeping_state(use_batch_statistics=recipe.batch_statistics)
        freeze_cells(recipe, [self.core])
        y, _, gw, weights = self._value_and_grads(x, dy)
        if weights:
            self.ms.nn.SGD(weights, learning_rate=lr)(tuple(gw[p.name] for p in weights))
        return self._out(y)

    def snippet(self) -> str:
        s = self.spec
        args = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        if s.dtype != "float32":
            args += f", dtype=mindspore.{s.dtype}"
        move = "\n# x channels-first (the CPU layer is NCHW only): np.moveaxis(x, -1, 1)" if self.transpose else ""
        return (f"import mindspore\nbn = mindspore.nn.{self.cls_name}({s.num_features}{args})\n"
                f"bn.set_train(True); y = bn(mindspore.Tensor(x)){move}")
