"""PyTorch adapter: torch.nn.BatchNorm1d/2d/3d.

Named torch_bn (not torch) so that it never shadows the framework itself.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from bnsuite.adapters.base import (BatchNormAdapter, Cited, Declaration, DtypeRule, FreezeFacts, FreezeIdiom, Grads,
                                   State, Unsupported, dtype_name)
from bnsuite.adapters import numerics
from bnsuite.adapters.conventions import module_mode_freeze, module_mode_idioms
from bnsuite.adapters.frameworks import Framework, OnFramework
from bnsuite.adapters.mixed_precision import torch_mixed

_SRC = "torch/nn/modules/batchnorm.py"

DECLARATION = Declaration(
    framework="torch",
    default_eps=Cited(1e-5, f"{_SRC}: _NormBase.__init__(eps: float = 1e-5)"),
    default_momentum=Cited(0.1, f"{_SRC}: _NormBase.__init__(momentum: float | None = 0.1)"),
    momentum_weights=Cited("new", f"{_SRC}: BatchNorm1d docstring, x_new = (1 - momentum) * x_hat + momentum * x_t"),
    default_channels_last=Cited(False, f"{_SRC}: BatchNorm2d docstring, input (N, C, H, W)"),
    running_var_estimator=Cited(
        {"default": "unbiased", "channels_last": "unbiased"},
        f"{_SRC}: docstring 'the running sum of the variance is calculated via the unbiased estimator'; "
        "aten/src/ATen/native/Normalization.cpp: batch_norm_cpu_update_stats_template uses var_sum / (n - 1)"),
    normalize_estimator=Cited("biased", f"{_SRC}: docstring 'calculated via the biased estimator, "
                                         "equivalent to torch.var(input, unbiased=False)'"),
    single_value_batch=Cited("error:ValueError", "torch/nn/functional.py: _verify_batch_size raises "
                                                 "ValueError('Expected more than 1 value per channel when training')"),
    cumulative_average=Cited(True, f"{_SRC}: momentum=None -> exponential_average_factor = "
                                   "1.0 / float(self.num_batches_tracked)"),
    batch_stats_inference=Cited("track_running_stats=False", f"{_SRC}: _BatchNorm.forward, "
                                "bn_training = (self.running_mean is None) and (self.running_var is None)"),
    variance_algorithm=Cited("two-pass", "aten/src/ATen/native/cpu/batch_norm_kernel.cpp: batch_norm_cpu_collect_stats "
                                         "computes the mean first, then var_sum of (x - mean)^2"),
    training_default=Cited("module-mode", "torch/nn/modules/module.py: Module.training, set by train()/eval(); "
                                          "a new module is in training mode"),
    freeze={
        **module_mode_freeze(
            "requires_grad_false",
            frozen=f"{_SRC}: _BatchNorm.forward reads self.training only; requires_grad affects autograd, not the "
                   "running-stat update",
            eval=f"{_SRC}: _BatchNorm.forward, bn_training False in eval -> running stats, no update; weight/bias "
                 "keep requires_grad=True",
            no_grad=f"{_SRC}: the running-stat update happens inside F.batch_norm regardless of grad mode; no graph "
                    "is recorded so the optimizer step has no gradient",
            eval_frozen=f"{_SRC}: eval() -> running stats; requires_grad_(False) -> no grads"),
        "func_replace_all_batch_norm_modules": Cited(
            FreezeFacts("batch", False, True),
            "torch/_functorch/batch_norm_replacement.py: replace_all_batch_norm_modules_ sets running_mean/var "
            "to None and track_running_stats=False, so batch statistics are used and nothing is updated"),
    },
)


_KERNEL = ("aten/src/ATen/native/cpu/batch_norm_kernel.cpp: batch_norm_cpu_collect_stats_*_impl accumulate in "
           "opmath_t = at::opmath_type<scalar_t> (float for Half/BFloat16)")
_FACTORY = f"{_SRC}: _NormBase.__init__ creates weight/bias/running_mean/running_var with factory_kwargs dtype"


def _low(dt: str) -> Cited[DtypeRule]:
    return Cited(DtypeRule("yes", output=dt, stats="float32", state=dt),
                 f"{_FACTORY}; {_KERNEL}; observed torch 2.13 CPU")


PRECISION = {
    "float16": _low("float16"),
    "bfloat16": _low("bfloat16"),
    "float64": Cited(DtypeRule("yes", output="float64", stats="float64", state="float64"),
                     f"{_FACTORY}; opmath_type<double> is double"),
}
DECLARATION = dataclasses.replace(DECLARATION, precision=PRECISION)
DECLARATION = dataclasses.replace(DECLARATION, mixed_precision=torch_mixed.declared())


def _dtype(torch, name: str):
    try:
        return getattr(torch, name)
    except AttributeError:  # pragma: no cover - names are validated by the suites
        raise Unsupported(f"torch: unknown dtype {name!r}")


def _versions() -> dict[str, str]:
    import torch

    return {"torch": torch.__version__}


def _device_reason(device: str) -> str | None:
    if device == "cpu":
        return None
    import torch

    if device == "gpu" and torch.cuda.is_available():
        return None
    return f"no GPU visible to torch (torch.cuda.is_available() is False, torch {torch.__version__})"


TORCH = Framework(requires=("torch",), families=("torch",), pins={"torch": "2.13.0"}, versions=_versions,
                  numeric_settings=numerics.torch_full_fp32, device_reason=_device_reason)


class TorchRecipe(NamedTuple):
    """How a torch freeze idiom treats every BatchNorm module, read alike by the lone layer and the networks."""

    params_frozen: bool = False  # module.requires_grad_(False)
    eval_mode: bool = False  # module.eval()
    no_grad: bool = False  # the training step runs under torch.no_grad()
    replace_modules: bool = False  # torch.func.replace_all_batch_norm_modules_ on the model


FREEZE_IDIOMS = {**module_mode_idioms(TorchRecipe, "requires_grad_false", "params_frozen"),
                 "func_replace_all_batch_norm_modules": FreezeIdiom(TorchRecipe(replace_modules=True))}


def freeze_modules(how: TorchRecipe, bns: list, root) -> list | None:
    """Freeze the BatchNorm modules `bns` of `root` as the recipe says. Returns the running buffers
    replace_all_batch_norm_modules_ detaches (one (mean, var) per module), else None."""
    for bn in bns:
        if how.params_frozen:
            bn.requires_grad_(False)
        if how.eval_mode:
            bn.eval()
    if not how.replace_modules:
        return None
    from torch.func import replace_all_batch_norm_modules_

    # The helper drops the running buffers; keep references to show whether anything still moves them.
    kept = [(bn.running_mean, bn.running_var) for bn in bns]
    replace_all_batch_norm_modules_(root)
    return kept


def grad_mode(torch, how: TorchRecipe | None):
    """The autograd mode a training step runs in under the recipe (None: no idiom, ordinary training)."""
    return torch.no_grad() if how is not None and how.no_grad else torch.enable_grad()


class TorchBatchNorm(OnFramework, BatchNormAdapter):
    id = "torch"
    runs_on = TORCH
    capabilities = {
        "network": "bnsuite.adapters.nets.torch_net:build",
        "norms": "bnsuite.adapters.norms.torch_norms:TorchNorms",
        "blocks": "bnsuite.adapters.blocks.torch_blocks:TorchBlocks",
        "replicas": "bnsuite.adapters.replicas.torch_ddp:TorchReplicas",
        "mixed_precision": "bnsuite.adapters.mixed_precision.torch_mixed:step",
        "edge_facts": "bnsuite.adapters.edge_facts:TORCH",
        "folding": "bnsuite.lanes.folding.torch_folding:TorchFolding",
        "training_loops": "bnsuite.lanes.loops.torch_loops:TorchLoops",
        "deploy": "bnsuite.lanes.deploy.torch_deploy:TorchDeploy",
        "compile": "bnsuite.lanes.compile.torch_compile:TorchCompile",
        "models": "bnsuite.models.torch_models:MODELS",
    }
    freeze_idioms = FREEZE_IDIOMS
    declaration = DECLARATION

    # -- build -------------------------------------------------------------------------------------------------------
    def __init__(self, spec):
        super().__init__(spec)
        import torch

        self.torch = torch
        self.device = torch.device("cuda" if spec.device == "gpu" else "cpu")
        cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d,
               5: torch.nn.BatchNorm3d}.get(spec.rank)
        if cls is None:
            raise Unsupported(f"torch: no BatchNorm for rank {spec.rank}")
        kwargs = dict(device=self.device, dtype=_dtype(torch, spec.dtype))
        if spec.use_defaults:
            self.module = cls(spec.num_features, **kwargs)
        else:
            self.module = cls(spec.num_features, eps=spec.eps, momentum=spec.momentum, affine=spec.affine,
                              track_running_stats=spec.track_running_stats, **kwargs)

    # -- layout ------------------------------------------------------------------------------------------------------
    def _to_torch(self, x: np.ndarray, requires_grad: bool = False):
        torch = self.torch
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, _dtype(torch, self.spec.dtype))
        if self.spec.channels_last and self.spec.rank > 2:
            t = t.movedim(-1, 1)  # logical NC..., the way torch users feed channels-last data
            if self.spec.rank in (4, 5):
                fmt = torch.channels_last if self.spec.rank == 4 else torch.channels_last_3d
                t = t.contiguous(memory_format=fmt)  # exercise the real channels-last kernels
        t = t.detach()
        t.requires_grad_(requires_grad)
        return t

    def _from_torch(self, t) -> np.ndarray:
        if self.spec.channels_last and self.spec.rank > 2:
            t = t.movedim(1, -1)
        return t.detach().to("cpu", self.torch.float64).numpy()

    def code_path(self, x_shape) -> str:
        return "channels_last" if self.spec.channels_last and self.spec.rank in (4, 5) else "default"

    # -- forward / state ---------------------------------------------------------------------------------------------
    def forward(self, x, training):
        if training is not None:
            self.module.train(training)
        with self.torch.no_grad():
            y = self.module(self._to_torch(x))
        self.last_output_dtype = dtype_name(y.dtype)
        return self._from_torch(y)

    def state_dtypes(self):
        m = self.module
        d = lambda t: None if t is None else dtype_name(t.dtype)
        return {"scale": d(m.weight), "offset": d(m.bias), "mean": d(m.running_mean), "var": d(m.running_var)}

    def get_state(self) -> State:
        m = self.module

        def arr(t):
            return None if t is None else t.detach().to("cpu", self.torch.float64).numpy().copy()

        mean, var = m.running_mean, m.running_var
        if mean is None and getattr(self, "_kept", None) is not None:
            mean, var = self._kept  # the buffers replace_all_batch_norm_modules_ detached, as they are now
        return State(arr(m.weight), arr(m.bias), arr(mean), arr(var))

    def set_state(self, state: State) -> None:
        m = self.module
        with self.torch.no_grad():
            for name, value in (("weight", state.scale), ("bias", state.offset), ("running_mean", state.mean),
                                ("running_var", state.var)):
                target = getattr(m, name)
                if target is not None and value is not None:
                    target.copy_(self.torch.as_tensor(value, dtype=target.dtype))

    def hyperparameters(self):
        return {"eps": self.module.eps, "momentum": self.module.momentum, "channels_last": False}

    def backward(self, x, dy, training):
        m = self.module
        # A training-mode forward updates the running buffers: keep them to restore afterwards.
        saved = {k: b.detach().clone() for k, b in m.named_buffers()}
        was_training = m.training
        m.train(training)
        xt = self._to_torch(x, requires_grad=True)
        y = m(xt)
        dyt = self._to_torch(dy)
        m.zero_grad(set_to_none=True)
        (y * dyt).sum().backward()
        with self.torch.no_grad():
            for k, b in m.named_buffers():
                b.copy_(saved[k])
        m.train(was_training)
        g = lambda p: None if p is None or p.grad is None else p.grad.detach().to("cpu", self.torch.float64).numpy()
        dx = xt.grad
        if self.spec.channels_last and self.spec.rank > 2:
            dx = dx.movedim(1, -1)
        return Grads(dx.detach().to("cpu", self.torch.float64).numpy(), g(self.module.weight), g(self.module.bias))

    # -- freeze ------------------------------------------------------------------------------------------------------
    def frozen_step(self, idiom, x, dy, lr):
        torch = self.torch
        m = self.module
        m.train(True)
        params = [p for p in (m.weight, m.bias) if p is not None]
        opt = torch.optim.SGD(params, lr=lr)
        recipe = self.freeze_recipe(idiom)
        kept = freeze_modules(recipe, [m], m)
        self._kept = kept and kept[0]
        opt.zero_grad(set_to_none=True)
        with grad_mode(torch, recipe):
            y = m(self._to_torch(x))
            loss = (y * self._to_torch(dy)).sum()
        if loss.requires_grad:
            loss.backward()
        opt.step()
        return self._from_torch(y)

    def snippet(self) -> str:
        s = self.spec
        cls = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}[s.rank]
        args = "" if s.use_defaults else (f", eps={s.eps}, momentum={s.momentum}, affine={s.affine}, "
                                          f"track_running_stats={s.track_running_stats}")
        return f"import torch\nbn = torch.nn.{cls}({s.num_features}{args}, dtype=torch.{s.dtype})"
