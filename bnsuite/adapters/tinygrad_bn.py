"""tinygrad adapter: tinygrad.nn.BatchNorm (BatchNorm2d and BatchNorm3d are the same class), a few lines over
Tensor.batchnorm. Sources: the installed tinygrad 0.14.0, tinygrad/nn/__init__.py (BatchNorm), tinygrad/mixin/op.py
(batchnorm), tinygrad/helpers.py (TRAINING, DEFAULT_FLOAT), tinygrad/nn/optim.py (Optimizer), confirmed by running it.

Mode control is process-wide: the context variable TRAINING (env TRAINING=1 or ``Context(TRAINING=1)``), default 0,
decides batch vs running statistics for every BatchNorm, and the optimizer refuses to step outside it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
from typing import NamedTuple

import numpy as np

from bnsuite.adapters.base import (BatchNormAdapter, Cited, Declaration, DtypeRule, FreezeFacts, FreezeIdiom, Grads,
                                   MixedRule, State, Unsupported)
from bnsuite.adapters.capabilities import conventional
from bnsuite.adapters.conventions import SlotState
from bnsuite.adapters.frameworks import Framework, OnFramework
from bnsuite.adapters.dtypes import np_dtype

# Both read when tinygrad is first imported (tinygrad/helpers.py), which happens after this module is loaded:
# * CACHEDB: tinygrad keeps every clang-compiled kernel in an sqlite cache (CACHELEVEL 2 by default); a checkout keeps
#   it in .cache/tinygrad like JAX's, an installed bnsuite in the user's cache folder;
# * PARALLEL=0: lower and compile new kernels in this process. The default pool (one spawned worker per core, each
#   re-importing tinygrad and respawned every 16 kernels, tinygrad/engine/worker.py) costs more than it saves on a
#   small machine: the deep-network case took 125 s with it and 55 s without, same kernels, same cache.
# The CPU device keeps its default renderer, CLANG (a clang process per new kernel): DEV=CPU:X86, tinygrad's own x86
# emitter with no compiler process, gives other low bits on the deep network, and DEV=CPU:LLVM fails to parse its
# own IR with Debian's libLLVM 15 ('%v18' defined with type 'float*' but expected '<4 x float>*').
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("CACHEDB", os.path.join(_CHECKOUT, ".cache", "tinygrad", "cache.db")
                      if os.path.isfile(os.path.join(_CHECKOUT, "requirements", "all.txt")) else
                      os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bnsuite",
                                   "tinygrad", "cache.db"))
os.environ.setdefault("PARALLEL", "0")
# DEV: the process's default device is the CPU, named, so tinygrad does not probe every backend it knows (importing
# each runtime, about a CPU second, tinygrad/device.py: _Device._select_device) and a machine with a GPU does not run
# the cpu cases there. Each case still names its own device (on_device); the user's DEV is kept for its CPU renderer.
_USER_DEV = os.environ.get("DEV")
os.environ.setdefault("DEV", "CPU")

_SRC = "tinygrad/nn/__init__.py"
_STATS = f"{_SRC}: BatchNorm.calc_stats"
_CALL = f"{_SRC}: BatchNorm.__call__"
_TRAINING = ("tinygrad/helpers.py: TRAINING = ContextVar('TRAINING', 0); "
             f"{_STATS}: `if self.track_running_stats and not TRAINING: return self.running_mean, self.running_var`")
_BESSEL = (f"{_CALL}: running_var.assign((1-momentum) * running_var + momentum * x.numel()/(x.numel()-x.shape[1]) "
           "* batch_var)")


@functools.lru_cache(maxsize=None)
def _clang_major() -> int | None:
    """The major version of the clang on PATH, which tinygrad's CPU device compiles every kernel with."""
    if shutil.which("clang") is None:
        return None
    try:
        out = subprocess.run(["clang", "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    words = out.split()
    for i, w in enumerate(words):
        if w == "version" and i + 1 < len(words):
            return int(words[i + 1].split(".")[0])
    return None


def _bfloat16_rule() -> Cited[DtypeRule]:
    """bfloat16 compiles only where the C compiler has __bf16 for the host target (clang 17 and later on x86-64)."""
    major = _clang_major()
    src = "tinygrad/renderer/cstyle.py: ClangRenderer writes bfloat16 as __bf16 and compiles with `clang -march=native`"
    if major is not None and major < 17:
        return Cited(DtypeRule("error:CalledProcessError"),
                     f"{src}; clang {major}: 'error: __bf16 is not supported on this target' (observed with "
                     "Debian clang 14.0.6)")
    return Cited(DtypeRule("yes", output="bfloat16", stats="bfloat16", state="bfloat16"),
                 f"{src}; clang >= 17 has __bf16 on x86-64; dtypes as for float16 (not observed on clang 14)")


def _declaration() -> Declaration:
    low = lambda dt: Cited(DtypeRule("yes", output=dt, stats=dt, state=dt),
                           f"{_SRC}: BatchNorm.__init__ Tensor.ones/zeros in dtypes.default_float (built under "
                           f"Context(DEFAULT_FLOAT='{dt}')); {_STATS}: x.mean and (y*y).mean return the input dtype "
                           "(reductions accumulate wider and cast back)")
    return Declaration(
        framework="tinygrad",
        default_eps=Cited(1e-5, f"{_SRC}: BatchNorm.__init__(sz, eps=1e-5, ...)"),
        default_momentum=Cited(0.1, f"{_SRC}: BatchNorm.__init__(..., momentum=0.1)"),
        momentum_weights=Cited("new", f"{_CALL}: running_mean.assign((1-self.momentum) * self.running_mean + "
                                      "self.momentum * batch_mean)"),
        default_channels_last=Cited(False, f"{_STATS}: shape_mask = [1, -1, *([1]*(x.ndim-2))] (channels on axis 1, "
                                           "no axis argument)"),
        running_var_estimator=Cited({"default": "unbiased"}, _BESSEL),
        normalize_estimator=Cited("biased", f"{_STATS}: batch_var = (y*y).mean(axis=reduce_axes)"),
        single_value_batch=Cited("error:ZeroDivisionError",
                                 f"{_BESSEL}: with one value per channel x.numel() - x.shape[1] is 0 (Python int "
                                 "division raises before any kernel runs)"),
        single_value_batch_stats_inference=Cited(
            "offset", f"{_CALL}: without running statistics there is no update and no Bessel factor; batch_var 0 "
                      "normalizes every value to the offset"),
        cumulative_average=Cited(False, f"{_CALL}: (1-self.momentum) with momentum=None raises TypeError"),
        batch_stats_inference=Cited("track_running_stats=False",
                                    f"{_STATS}: without running statistics the batch's are computed in every mode"),
        training_default=Cited("inference", _TRAINING),
        variance_algorithm=Cited("two-pass", f"{_STATS}: batch_mean first, then y = x - batch_mean, batch_var = "
                                             "(y*y).mean (comment: 'This requires two full memory accesses to x')"),
        freeze={
            "train": Cited(FreezeFacts("batch", True, True), f"{_TRAINING}; the forward and the step inside "
                                                             "Context(TRAINING=1)"),
            "training_off_forward": Cited(
                FreezeFacts("running", False, True),
                f"{_TRAINING}: the forward outside Context(TRAINING=1) uses and keeps the running statistics; "
                "tinygrad/nn/optim.py: Optimizer.schedule_step raises unless TRAINING, so backward and step run "
                "inside it"),
        },
        precision={"float16": low("float16"), "bfloat16": _bfloat16_rule(),
                   "float64": low("float64")},
        mixed_precision=_mixed(),
    )


def _mixed() -> dict:
    """A float32 layer (built with defaults) fed 16-bit activations: the batch statistics are reductions of the 16-bit
    input and stay in its dtype, the running statistics promote to float32, the output to float32."""
    src = (f"{_STATS}: batch_mean = x.mean(...), batch_var = (y*y).mean(...) in the input's dtype; {_CALL}: "
           "running_mean.assign((1-momentum) * running_mean + momentum * batch_mean) promotes to float32; "
           "tinygrad/mixin/op.py: batchnorm (x - mean) * weight promotes to the float32 weight")
    rules = {"defaults-float16": Cited(MixedRule("yes", output="float32", stats="float16", params="float32",
                                                 state="float32", running_var_finite=False),
                                       f"{src}; (y*y).mean of values above 256 overflows float16 to inf")}
    bf = _bfloat16_rule()
    rules["defaults-bfloat16"] = Cited(MixedRule(bf.value.supported) if bf.value.supported != "yes" else
                                       MixedRule("yes", output="float32", stats="bfloat16", params="float32",
                                                 state="float32"), f"{src}; {bf.source}")
    return rules


def _versions() -> dict[str, str]:
    import importlib.metadata

    return {"tinygrad": importlib.metadata.version("tinygrad")}


def _numeric_settings() -> dict:
    """tinygrad has no reduced-precision float32 mode (no TF32 switch); float32 kernels are float32."""
    from tinygrad import Device

    return {"tinygrad.Device.DEFAULT": Device.DEFAULT, "tf32": "off"}


def _device_reason(device: str) -> str | None:
    if device == "cpu":
        return None
    from tinygrad import Device

    try:
        Device[GPU_DEVICE]
    except Exception as e:  # no CUDA runtime or no GPU
        return f"no GPU visible to tinygrad (Device[{GPU_DEVICE!r}]: {type(e).__name__})"
    return None


TINYGRAD = Framework(requires=("tinygrad",), families=("tinygrad",), pins={"tinygrad": "0.14.0"}, versions=_versions,
                     numeric_settings=_numeric_settings, device_reason=_device_reason)


class TinygradRecipe(NamedTuple):
    """How a tinygrad freeze idiom runs a training step, read alike by the lone layer and the networks: the backward
    pass and the optimizer step always run inside Context(TRAINING=1) (Optimizer.schedule_step requires it)."""

    training_forward: bool  # the forward runs inside Context(TRAINING=1) too


FREEZE_IDIOMS = {
    "train": FreezeIdiom(TinygradRecipe(training_forward=True)),
    "training_off_forward": FreezeIdiom(TinygradRecipe(training_forward=False)),
}


def realize_step(Tensor, bns: list, *tensors) -> None:
    """Realize a step's tensors with the BatchNorm layers' running statistics in one schedule, as a training loop does
    each step: the lazy assigns otherwise chain across steps into one growing graph (a new kernel at every step)."""
    stats = [t for bn in bns for t in (getattr(bn, "running_mean", None), getattr(bn, "running_var", None),
                                       bn.num_batches_tracked) if t is not None]
    Tensor.realize(*tensors, *stats)


GPU_DEVICE = "CUDA"  # the GPU device a "gpu" case runs on, the one _device_reason opens


@functools.lru_cache(maxsize=None)
def device_target(device: str) -> str:
    """tinygrad's device string for a case's device: "gpu" -> CUDA; "cpu" -> its CPU device, with the renderer the
    user's DEV gives it if any (DEV=CPU:X86 keeps X86), else CPU (tinygrad/helpers.py: _DEV.target)."""
    if device != "cpu":
        return GPU_DEVICE
    from tinygrad.helpers import DEV

    return repr(DEV.target("CPU"))


def on_device(device: str):
    """Context(DEV=...) naming the case's device: every tensor made inside it (and every layer built) lives there."""
    from tinygrad.helpers import Context

    return Context(DEV=device_target(device))


def host_tensor(Tensor, dtypes, a, dtype):
    """A tinygrad tensor of `dtype` holding the float64 values `a`. For float32 and float64 NumPy rounds as tinygrad's
    cast would (IEEE round to nearest even, beyond the range to inf), so the values arrive by copy, with no cast
    kernel to compile per shape; other dtypes are cast by tinygrad."""
    if dtype in (dtypes.float32, dtypes.float64):
        with np.errstate(over="ignore"):
            return Tensor(np.ascontiguousarray(a, np.float32 if dtype == dtypes.float32 else np.float64))
    return Tensor(np.ascontiguousarray(a, np.float64)).cast(dtype)


def training_mode(training: bool | None):
    """Context(TRAINING=...) for one call; None leaves the process's setting (default 0: inference)."""
    if training is None:
        return contextlib.nullcontext()
    from tinygrad.helpers import Context

    return Context(TRAINING=int(bool(training)))


class TinygradBatchNorm(OnFramework, SlotState, BatchNormAdapter):
    id = "tinygrad"
    runs_on = TINYGRAD
    capabilities = {**conventional("tinygrad", "network", "norms", "mixed_precision", "edge_facts", "compile",
                                   "blocks"),
                    "replicas": "bnsuite.adapters.replicas.tinygrad_shard:TinygradReplicas"}
    freeze_idioms = FREEZE_IDIOMS

    @classmethod
    def unavailable_reason(cls):
        why = super().unavailable_reason()
        if why is None and _clang_major() is None:
            if not _USER_DEV:
                return "tinygrad's CPU device compiles its kernels with clang, which is not on PATH"
        return why

    @classmethod
    def declare(cls) -> Declaration:
        return _declaration()

    def __init__(self, spec):
        super().__init__(spec)
        from tinygrad import Tensor, dtypes, nn
        from tinygrad.helpers import Context

        if spec.rank not in (2, 3, 4, 5):
            raise Unsupported(f"tinygrad: no BatchNorm for rank {spec.rank}")
        if spec.momentum is None and not spec.use_defaults:
            raise Unsupported("tinygrad has no cumulative moving average (momentum=None); declared")
        self.Tensor, self.dtypes, self.nn, self.Context = Tensor, dtypes, nn, Context
        self.dt = getattr(dtypes, spec.dtype)
        self.kwargs = {} if spec.use_defaults else dict(eps=spec.eps, momentum=spec.momentum, affine=spec.affine,
                                                        track_running_stats=spec.track_running_stats)
        self.transpose = spec.channels_last and spec.rank > 2  # channels on axis 1 only: the user permutes
        with Context(DEFAULT_FLOAT=spec.dtype), on_device(spec.device):
            self.bn = nn.BatchNorm(spec.num_features, **self.kwargs)

    def _in(self, x):
        """The case's input on the case's device (named here too: the lanes call it outside on_device)."""
        x = np.moveaxis(x, -1, 1) if self.transpose else x
        return self.Tensor(np.ascontiguousarray(np.asarray(x, np.float32 if self.spec.dtype != "float64" else
                                                           np.float64)),
                           device=device_target(self.spec.device)).cast(self.dt)

    def _np(self, t) -> np.ndarray:
        return np.asarray(t.cast(self.dtypes.float64 if self.spec.dtype == "float64" else self.dtypes.float32)
                          .numpy(), np.float64)

    def _out(self, t) -> np.ndarray:
        y = self._np(t)
        return np.moveaxis(y, 1, -1) if self.transpose else y

    # -- forward / state ---------------------------------------------------------------------------------------------
    def forward(self, x, training):
        with on_device(self.spec.device), training_mode(training):
            y = self.bn(self._in(x))
            realize_step(self.Tensor, [self.bn], y)
            out = self._out(y)
        self.last_output_dtype = np.dtype(np_dtype(dtype_name(y.dtype))).name
        return out

    def _slot(self, name):
        bn = self.bn
        return {"scale": bn.weight, "offset": bn.bias, "mean": getattr(bn, "running_mean", None),
                "var": getattr(bn, "running_var", None)}[name]

    def _read(self, t):
        return self._np(t)

    def _write(self, t, value):
        with on_device(self.spec.device):
            t.assign(host_tensor(self.Tensor, self.dtypes, value, t.dtype)).realize()

    def _dtype(self, t):
        return np.dtype(np_dtype(dtype_name(t.dtype))).name

    def hyperparameters(self):
        return {"eps": self.bn.eps, "momentum": self.bn.momentum, "channels_last": False}

    def backward(self, x, dy, training):
        saved = self.get_state()
        with on_device(self.spec.device):
            xt = self._in(x)
        for t in (self.bn.weight, self.bn.bias):
            if t is not None:
                t.grad = None
        with on_device(self.spec.device), training_mode(training):
            y = self.bn(xt)
            dyt = self._in(dy)
            (y * dyt).sum().backward()
            grads = Grads(self._out(xt.grad), *(None if t is None or t.grad is None else self._np(t.grad)
                                                for t in (self.bn.weight, self.bn.bias)))
        self.set_state(State(None, None, saved.mean, saved.var))
        return grads

    # -- freeze ------------------------------------------------------------------------------------------------------
    def frozen_step(self, idiom, x, dy, lr):
        recipe = self.freeze_recipe(idiom)
        opt = self.nn.optim.SGD(self.nn.state.get_parameters(self.bn), lr=lr)
        opt.zero_grad()
        with on_device(self.spec.device), training_mode(recipe.training_forward):
            y = self.bn(self._in(x))
            loss = (y * self._in(dy)).sum()
            out = self._out(y)
        with on_device(self.spec.device), training_mode(True):
            loss.backward()
            opt.step()
        return out

    def snippet(self) -> str:
        s = self.spec
        args = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        return (f"from tinygrad import nn\nfrom tinygrad.helpers import Context\n"
                f"with Context(DEFAULT_FLOAT={s.dtype!r}):\n    bn = nn.BatchNorm({s.num_features}{args})\n"
                "with Context(TRAINING=1):\n    y = bn(x)")


def dtype_name(dtype) -> str:
    """A tinygrad dtype's NumPy name: dtypes.half -> "float16"."""
    return {"half": "float16", "float": "float32", "double": "float64", "__bf16": "bfloat16"}.get(
        getattr(dtype, "name", str(dtype)), getattr(dtype, "name", str(dtype)))
