"""PaddlePaddle adapter: paddle.nn.BatchNorm1D/2D/3D in dynamic-graph (eager) mode.

Named paddle_bn (not paddle) so that it never shadows the framework itself. Sources: the installed paddlepaddle 3.3.1
(python/paddle/nn/layer/norm.py, python/paddle/nn/functional/norm.py) and the CPU kernel
paddle/phi/kernels/cpu/batch_norm_kernel.cc (PaddlePaddle/Paddle, BatchNormKernel), confirmed by running it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
from typing import NamedTuple

import numpy as np

from bnsuite.adapters.base import (BatchNormAdapter, Cited, Declaration, DtypeRule, FreezeFacts, FreezeIdiom, Grads,
                                   MixedRule, Probe, Unsupported)
from bnsuite.adapters.capabilities import conventional
from bnsuite.adapters.conventions import SlotState, module_mode_freeze, module_mode_idioms
from bnsuite.adapters.frameworks import Framework, OnFramework
from bnsuite.adapters.import_order import ImportTrap, import_after

_LAYER = "paddle/nn/layer/norm.py"
_F = "paddle/nn/functional/norm.py: batch_norm"
_KERNEL = "paddle/phi/kernels/cpu/batch_norm_kernel.cc: BatchNormKernel"
# use_global_stats=None: batch statistics in training, running ones in eval (the default).
_UGS = (f"{_F}: use_global_stats None -> use_global_stats = not training, trainable_statistics = False; "
        "False -> trainable_statistics = True")
_BATCH_STATS_MOVE = (f"{_UGS}; {_KERNEL}: test_mode = is_test && !trainable_statistics, so use_global_stats=False "
                     "normalizes with AND updates the running statistics in eval() too (the adapter runs inference "
                     "with batch statistics on a copy of the running statistics; the probe "
                     "use_global_stats_false_eval_updates_running_stats shows the update)")

DECLARATION = Declaration(
    framework="paddle",
    default_eps=Cited(1e-5, f"{_LAYER}: _BatchNormBase.__init__(epsilon: float = 1e-05)"),
    default_momentum=Cited(0.9, f"{_LAYER}: _BatchNormBase.__init__(momentum: float = 0.9)"),
    momentum_weights=Cited("old", f"{_LAYER}: BatchNorm2D docstring, moving_mean = moving_mean * momentum + "
                                  f"mu_beta * (1. - momentum); {_KERNEL}: running_mean_arr * momentum + "
                                  "saved_mean_e * (1. - momentum)"),
    default_channels_last=Cited(False, f"{_LAYER}: BatchNorm2D.__init__(data_format='NCHW'), BatchNorm1D 'NCL', "
                                       "BatchNorm3D 'NCDHW'"),
    running_var_estimator=Cited({"default": "biased"},
                                f"{_KERNEL}: saved_variance_e /= N * sample_size, then running_var_arr * momentum + "
                                "saved_variance_e * (1. - momentum) (no Bessel correction); docstring "
                                "sigma_beta^2 = 1/m sum (x_i - mu_beta)^2"),
    normalize_estimator=Cited("biased", f"{_KERNEL}: inv_std from saved_variance (divided by N * sample_size)"),
    single_value_batch=Cited("input unchanged", f"{_KERNEL}: 'if ((N * sample_size) == 1) {{ // Only 1 element in "
                                                "normalization dimension, we skip the batch norm calculation, let "
                                                "y = x.' TensorCopy(x, y); return' (scale, offset and the running "
                                                "statistics are ignored)"),
    cumulative_average=Cited(False, f"{_F}(momentum: float = 0.9); momentum=None raises TypeError in "
                                    "_C_ops.batch_norm ('argument (position 7) must be double')"),
    batch_stats_inference=Cited("use_global_stats=False", _BATCH_STATS_MOVE),
    training_default=Cited("module-mode", "paddle/nn/layer/layers.py: Layer.training, set by train()/eval(); a new "
                                          f"layer is in training mode; {_LAYER}: _BatchNormBase.forward passes "
                                          "training=self.training"),
    variance_algorithm=Cited("two-pass", f"{_KERNEL}: saved_mean_e summed and divided first, then saved_variance_e "
                                         "+= (x - saved_mean_e)^2 (both layouts)"),
    freeze={
        **module_mode_freeze(
            "stop_gradient",
            frozen=f"{_LAYER}: _BatchNormBase.forward passes training=self.training only; param.stop_gradient = "
                   "True removes the gradient, not the running-stat update",
            eval=f"{_UGS}: eval() -> use_global_stats = True, no update; weight/bias keep stop_gradient=False",
            no_grad=f"{_KERNEL}: the running-stat update happens inside the kernel whatever the grad mode; under "
                    "paddle.no_grad() no gradient reaches the optimizer",
            eval_frozen="eval() -> running statistics; stop_gradient = True -> no gradients"),
        "use_global_stats_true": Cited(FreezeFacts("running", False, True),
                                       f"{_LAYER}: BatchNorm2D docstring 'if set to True, use the global statistics'; "
                                       f"{_KERNEL}: global_stats = test_mode || use_global_stats skips the update"),
    },
    precision={
        "float16": Cited(DtypeRule("error:RuntimeError"),
                         f"{_KERNEL}: PD_REGISTER_KERNEL(batch_norm, CPU, ALL_LAYOUT, phi::BatchNormKernel, float, "
                         "double): NotFound 'kernel with key (CPU, ..., float16) of kernel batch_norm is not "
                         "registered' (the GPU kernel has float16)"),
        "bfloat16": Cited(DtypeRule("error:RuntimeError"),
                          f"{_KERNEL}: registered for float and double only on the CPU"),
        "float64": Cited(DtypeRule("yes", output="float64", stats="float64", state="float64",
                                   hyperparameters="float32"),
                         f"{_LAYER}: _BatchNormBase.__init__ creates weight/bias/_mean/_variance in "
                         f"get_default_dtype() (paddle.set_default_dtype('float64') before building); {_KERNEL} "
                         "computes in T = double but takes `float momentum, float epsilon`, so a float64 layer "
                         "normalizes with eps rounded to float32"),
    },
)

_NO_LOW_KERNEL = (f"{_KERNEL}: registered for float and double only on the CPU (NotFound 'kernel with key (CPU, "
                  "..., float16) of kernel batch_norm is not registered')")
# Mixed precision (suites/test_mixed_precision.py): a float32 layer fed 16-bit activations, plainly or inside
# paddle.amp.auto_cast (O1), which does not cast batch_norm's input back to float32 on the CPU.
MIXED = {f"{kind}-{low}": Cited(MixedRule("error:RuntimeError"), src)
         for low in ("float16", "bfloat16")
         for kind, src in (("defaults", _NO_LOW_KERNEL),
                           ("autocast", f"paddle/amp/auto_cast.py: auto_cast(level='O1', dtype='{low}') leaves "
                                        f"batch_norm's input in {low} on the CPU (observed paddle 3.3.1); "
                                        f"{_NO_LOW_KERNEL}"))}
DECLARATION = dataclasses.replace(DECLARATION, mixed_precision=MIXED)


def _versions() -> dict[str, str]:
    import paddle

    return {"paddle": paddle.__version__}


def _numeric_settings() -> dict:
    """TF32 off where the build has CUDA (FLAGS_allow_tf32_cublas / _cudnn); a CPU build has neither flag."""
    import paddle

    if not paddle.is_compiled_with_cuda():
        return {"paddle.is_compiled_with_cuda": False, "tf32": "off"}
    flags = {"FLAGS_allow_tf32_cublas": False, "FLAGS_allow_tf32_cudnn": False}
    paddle.set_flags(flags)
    got = paddle.get_flags(list(flags))
    return {**got, "tf32": "on" if any(got.values()) else "off"}


def _device_reason(device: str) -> str | None:
    if device == "cpu":
        return None
    import paddle

    if device == "gpu" and paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        return None
    return (f"no GPU visible to paddle (paddle {paddle.__version__}, is_compiled_with_cuda() "
            f"{paddle.is_compiled_with_cuda()})")


# pins names the module; requirements and tox install the distribution paddlepaddle (frameworks.ALIASES).
# import_first: `import tensorflow; import paddle` dies with SIGSEGV while paddle/base/core.py loads its extension
# (paddlepaddle 3.3.1, tensorflow-cpu 2.21, observed); `import paddle; import tensorflow` works. Plain pytest with
# every adapter imports TensorFlow long before paddle's first case.
PADDLE = Framework(requires=("paddle",), families=("paddle",), pins={"paddle": "3.3.1"}, versions=_versions,
                   numeric_settings=_numeric_settings, device_reason=_device_reason, import_first=True)

class PaddleRecipe(NamedTuple):
    """How a paddle freeze idiom treats every BatchNorm layer, read alike by the lone layer and the networks."""

    eval_mode: bool = False  # layer.eval()
    stop_gradient: bool = False  # weight.stop_gradient = bias.stop_gradient = True
    no_grad: bool = False  # the training step runs under paddle.no_grad()
    use_global_stats: bool = False  # the layer built with use_global_stats=True


FREEZE_IDIOMS = {**module_mode_idioms(PaddleRecipe, "stop_gradient", "stop_gradient"),
                 "use_global_stats_true": FreezeIdiom(PaddleRecipe(use_global_stats=True))}


def freeze_layers(how: PaddleRecipe, bns: list) -> None:
    """Freeze the BatchNorm layers `bns` as the recipe says (use_global_stats is a build argument, applied there)."""
    for bn in bns:
        if how.stop_gradient:
            for p in (bn.weight, bn.bias):
                if p is not None:
                    p.stop_gradient = True
        if how.eval_mode:
            bn.eval()


def grad_mode(paddle, how: PaddleRecipe | None):
    """The autograd mode a training step runs in under the recipe (None: no idiom, ordinary training)."""
    return paddle.no_grad() if how is not None and how.no_grad else contextlib.nullcontext()


# rank -> (layer class, channels-first data_format, channels-last data_format)
_CLASSES = {2: ("BatchNorm1D", "NC", "NC"), 3: ("BatchNorm1D", "NCL", "NLC"), 4: ("BatchNorm2D", "NCHW", "NHWC"),
            5: ("BatchNorm3D", "NCDHW", "NDHWC")}


def _dt(t) -> str:
    """A paddle tensor's dtype as NumPy spells it (str() gives "paddle.float32")."""
    return str(t.dtype).replace("paddle.", "")


@contextlib.contextmanager
def default_dtype(paddle, name: str):
    """paddle.set_default_dtype(name) while a layer is built (its parameters take the default dtype), then back."""
    old = paddle.get_default_dtype()
    paddle.set_default_dtype(name if name in ("float32", "float64") else "float32")
    try:
        yield
    finally:
        paddle.set_default_dtype(old)


def _eval_moves_running_stats() -> str:
    """eval() + use_global_stats=False: does one forward move the running mean?"""
    import paddle

    bn = paddle.nn.BatchNorm2D(3, use_global_stats=False)
    bn.eval()
    x = np.random.default_rng(0).normal(2.0, 3.0, (4, 3, 2, 2)).astype("float32")
    bn(paddle.to_tensor(x))
    return "running stats move" if np.any(bn._mean.numpy() != 0.0) else "running stats unchanged"


class PaddleBatchNorm(ImportTrap, OnFramework, SlotState, BatchNormAdapter):
    id = "paddle"
    runs_on = PADDLE
    capabilities = {**conventional("paddle", "network", "norms", "blocks", "mixed_precision", "edge_facts", "compile"),
                    "replicas": "bnsuite.adapters.replicas.paddle_dp:PaddleReplicas"}
    freeze_idioms = FREEZE_IDIOMS
    declaration = DECLARATION
    import_trap = ("tensorflow", "TensorFlow", "segfaults", "import_after_tensorflow")

    @classmethod
    def probes(cls):
        probes = [Probe("use_global_stats_false_eval_updates_running_stats",
                        Cited("running stats move", _BATCH_STATS_MOVE), _eval_moves_running_stats)]
        if importlib.util.find_spec("tensorflow") is not None:  # the trap needs TensorFlow installed beside paddle
            probes.append(Probe("import_after_tensorflow", Cited(
                "crash:SIGSEGV", "observed with tensorflow-cpu 2.21.0 and paddlepaddle 3.3.1 on Linux x86-64: "
                "`import tensorflow; import paddle` dies with a segmentation fault while `import paddle; import "
                "tensorflow` works (two copies of protobuf/abseil native code in one process)"),
                lambda: import_after("tensorflow", "paddle")))
        return probes

    # -- build -------------------------------------------------------------------------------------------------------
    def __init__(self, spec):
        super().__init__(spec)
        import paddle

        self.paddle = paddle
        if spec.rank not in _CLASSES:
            raise Unsupported(f"paddle: no BatchNorm for rank {spec.rank}")
        if spec.device == "gpu":
            paddle.set_device("gpu")
        if spec.momentum is None and not spec.use_defaults:
            raise Unsupported("paddle has no cumulative moving average (momentum=None); declared")
        name, first, last = _CLASSES[spec.rank]
        # With use_defaults no data_format is passed: channels-last data is transposed to paddle's default layout.
        self.transpose = spec.use_defaults and spec.channels_last and spec.rank > 2
        self.data_format = last if spec.channels_last and not spec.use_defaults else first
        self.kwargs = {}
        if not spec.use_defaults:
            self.kwargs["data_format"] = self.data_format
            self.kwargs.update(epsilon=spec.eps, momentum=1.0 - spec.momentum)
            if not spec.affine:
                self.kwargs.update(weight_attr=False, bias_attr=False)
            if not spec.track_running_stats:
                self.kwargs["use_global_stats"] = False
        self.cls_name = name
        self.bn = self._build()

    def _build(self, **extra):
        with default_dtype(self.paddle, self.spec.dtype):
            return getattr(self.paddle.nn, self.cls_name)(self.spec.num_features, **{**self.kwargs, **extra})

    def _in(self, x, requires_grad: bool = False):
        x = np.moveaxis(x, -1, 1) if self.transpose else x
        t = self.paddle.to_tensor(np.ascontiguousarray(x)).astype(self.spec.dtype)
        t.stop_gradient = not requires_grad
        return t

    def _out(self, t) -> np.ndarray:
        """An output or input gradient in the spec's layout."""
        y = self._np(t)
        return np.moveaxis(y, 1, -1) if self.transpose else y

    @staticmethod
    def _np(t) -> np.ndarray:
        return np.asarray(t.astype("float64").numpy(), np.float64)

    # -- forward / state ---------------------------------------------------------------------------------------------
    def forward(self, x, training):
        bn = self.bn
        if training is not None:
            bn.train() if training else bn.eval()
        # use_global_stats=False updates them even in eval(): declared, then undone
        with self.running_stats_kept(training is False and not self.spec.track_running_stats), self.paddle.no_grad():
            y = bn(self._in(x))
        self.last_output_dtype = _dt(y)
        return self._out(y)

    def _slot(self, name):
        return {"scale": self.bn.weight, "offset": self.bn.bias, "mean": self.bn._mean, "var": self.bn._variance}[name]

    def _read(self, p):
        return self._np(p)

    def _write(self, p, value):
        p.set_value(value.astype(_dt(p)))

    def _dtype(self, p):
        return _dt(p)

    def hyperparameters(self):
        return {"eps": self.bn._epsilon, "momentum": self.bn._momentum,
                "channels_last": self.data_format in ("NLC", "NHWC", "NDHWC")}

    def backward(self, x, dy, training):
        bn = self.bn
        was_training = bn.training
        bn.train() if training else bn.eval()
        xt = self._in(x, requires_grad=True)
        for p in bn.parameters():
            p.clear_gradient()
        with self.running_stats_kept():
            y = bn(xt)
            (y * self._in(dy)).sum().backward()
        bn.train() if was_training else bn.eval()
        g = lambda p: None if p is None or p.grad is None else self._np(p.grad)
        return Grads(self._out(xt.grad), g(bn.weight), g(bn.bias))

    # -- freeze ------------------------------------------------------------------------------------------------------
    def frozen_step(self, idiom, x, dy, lr):
        paddle = self.paddle
        recipe = self.freeze_recipe(idiom)
        if recipe.use_global_stats:
            self.rebuild_keeping_state(use_global_stats=True)
        bn = self.bn
        bn.train()
        params = [p for p in (bn.weight, bn.bias) if p is not None]
        opt = paddle.optimizer.SGD(learning_rate=lr, parameters=params)
        freeze_layers(recipe, [bn])
        opt.clear_grad()
        with grad_mode(paddle, recipe):
            y = bn(self._in(x))
            loss = (y * self._in(dy)).sum()
        if not loss.stop_gradient:
            loss.backward()
        opt.step()
        return self._out(y)

    def snippet(self) -> str:
        s = self.spec
        args = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        pre = "paddle.set_default_dtype('float64')\n" if s.dtype == "float64" else ""
        return f"import paddle\n{pre}bn = paddle.nn.{self.cls_name}({s.num_features}{args})"
