"""PyTorch normalization layers: torch.nn.LayerNorm, RMSNorm, GroupNorm, InstanceNorm1d/2d."""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, Unsupported
from bnsuite.adapters.norms import NormAdapter, NormDeclaration, NormFacts, NormSpec

_NORM = "torch/nn/modules/normalization.py"
_INST = "torch/nn/modules/instancenorm.py"
_STABLE = ("aten/src/ATen/native/cpu/moments_utils.h: RowwiseMoments (cascaded Welford), used by layer_norm_kernel.cpp "
           "and group_norm_kernel.cpp: the stable class of two-pass")
_ROWWISE = "each sample's row is reduced on its own (the CPU kernels parallelize over rows), so batch size and " \
           "neighbours cannot change the arithmetic; observed bitwise on torch 2.13 CPU"

DECLARATION = NormDeclaration(
    framework="torch",
    kinds={
        "layer": Cited(NormFacts("torch.nn.LayerNorm(normalized_shape=(C,))", 1e-5, "last", True, "two-pass", True),
                       f"{_NORM}: LayerNorm.__init__(eps=1e-5, elementwise_affine=True); normalized_shape is "
                       f"required, (C,) normalizes the last axis (the docstring: 'the last D dimensions'); {_STABLE}; "
                       f"{_ROWWISE}"),
        "rms": Cited(NormFacts("torch.nn.RMSNorm(normalized_shape=(C,))", "dtype-eps", "last", True, "mean-square",
                               True),
                     f"{_NORM}: RMSNorm.__init__(eps=None), docstring 'If None, defaults to "
                     f"torch.finfo(x.dtype).eps'; torch/_decomp/decompositions.py: rms_norm; {_ROWWISE}"),
        "group": Cited(NormFacts("torch.nn.GroupNorm(num_groups, num_channels)", 1e-5, "channels-first", True,
                                 "two-pass", True),
                       f"{_NORM}: GroupNorm.__init__(eps=1e-5, affine=True), input (N, C, *); {_STABLE}; {_ROWWISE}"),
        "instance": Cited(NormFacts("torch.nn.InstanceNorm1d/2d(num_features)", 1e-5, "channels-first", False,
                                    "two-pass", True,
                                    training_mode="with track_running_stats=True: eval normalizes with the running "
                                                  "statistics, training with the instance's own and updates them"),
                          f"{_INST}: _InstanceNorm.__init__(eps=1e-5, affine=False, track_running_stats=False); "
                          "torch/nn/functional.py: instance_norm -> aten instance_norm reshapes to (1, N*C, *) and "
                          "runs batch_norm (two-pass, aten/src/ATen/native/cpu/batch_norm_kernel.cpp); "
                          f"{_ROWWISE}"),
    },
    group_layout=Cited("contiguous", f"{_NORM}: GroupNorm docstring 'The input channels are separated into "
                                     "num_groups groups, each containing num_channels / num_groups channels'; "
                                     "aten/src/ATen/native/cpu/group_norm_kernel.cpp: GroupNormKernelImplInternal "
                                     "reduces D = C / G consecutive channels per group"),
    group_layouts=Cited(("channels-first",), f"{_NORM}: GroupNorm input (N, C, *); {_INST}: InstanceNorm2d input "
                                             "(N, C, H, W); channels-last needs a permute"),
    instance_running_stats=Cited("running", f"{_INST}: _InstanceNorm.forward passes "
                                            "`self.training or not self.track_running_stats` as use_input_stats, so "
                                            "eval with track_running_stats=True normalizes with the running stats"),
    instance_running_stats_default=Cited(False, f"{_INST}: _InstanceNorm.__init__(track_running_stats=False)"),
    layer_rms_scaling=Cited(None, f"{_NORM}: LayerNorm has no rms_scaling option; RMSNorm is its own layer"),
)


class TorchNorms(NormAdapter):
    declaration = DECLARATION

    def __init__(self, spec: NormSpec):
        super().__init__(spec)
        import torch

        self.torch = torch
        self.dtype = getattr(torch, spec.dtype)
        self.device = torch.device("cuda" if spec.device == "gpu" else "cpu")
        c, nn = spec.num_features, torch.nn
        kw = self.options("eps", "elementwise_affine" if spec.kind in ("layer", "rms") else "affine")
        if spec.kind == "layer":
            m = nn.LayerNorm((c,), **kw)
        elif spec.kind == "rms":
            m = nn.RMSNorm((c,), **kw)
        elif spec.kind == "group":
            m = nn.GroupNorm(spec.groups, c, **kw)
        else:
            if spec.rank not in (3, 4):
                raise Unsupported(f"torch InstanceNorm cases cover rank 3 and 4 inputs, not rank {spec.rank}")
            cls = nn.InstanceNorm1d if spec.rank == 3 else nn.InstanceNorm2d
            if not spec.use_defaults:
                kw.update(track_running_stats=spec.track_running_stats, momentum=spec.momentum)
            m = cls(c, **kw)
        self.module = m.to(self.device, self.dtype)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        torch = self.torch
        self.module.train(training)
        xt = torch.as_tensor(np.asarray(x), dtype=self.dtype, device=self.device)
        with torch.no_grad():
            y = self.module(xt)
        return y.to("cpu", torch.float64).numpy()

    def _param(self, name):
        p = getattr(self.module, name, None)
        return None if p is None else p.detach().to("cpu", self.torch.float64).numpy().copy()

    def get_params(self):
        return self._param("weight"), self._param("bias")

    def set_params(self, scale, offset) -> None:
        with self.torch.no_grad():
            for name, v in (("weight", scale), ("bias", offset)):
                p = getattr(self.module, name, None)
                if p is not None and v is not None:
                    p.copy_(self.torch.as_tensor(v, dtype=p.dtype))

    def tracks_running_stats(self) -> bool:
        return getattr(self.module, "running_mean", None) is not None

    def set_running_stats(self, mean, var) -> None:
        if not self.tracks_running_stats():
            raise Unsupported("torch: this layer keeps no running statistics")
        with self.torch.no_grad():
            self.module.running_mean.copy_(self.torch.as_tensor(mean))
            self.module.running_var.copy_(self.torch.as_tensor(var))

    def snippet(self) -> str:
        return f"import torch\nm = {self.module!r}  # spec {self.spec}"
