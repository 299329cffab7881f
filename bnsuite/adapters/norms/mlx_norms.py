"""MLX normalization layers: mlx.nn.LayerNorm, RMSNorm, GroupNorm, InstanceNorm (all channels-last)."""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, Unsupported
from bnsuite.adapters.mlx_bn import mx_array, mx_dtype, mx_numpy
from bnsuite.adapters.norms import NormAdapter, NormDeclaration, NormFacts, NormSpec, no_running_stats

_NORM = "mlx/nn/layers/normalization.py"
_FAST = "mx.fast.layer_norm (mlx/core/fast.pyi)"
_ROWWISE = "each sample is normalized on its own; observed bitwise between a batch of 8 and of 1 on mlx 0.32.4 CPU"

DECLARATION = NormDeclaration(
    framework="mlx",
    kinds={
        "layer": Cited(NormFacts("mlx.nn.LayerNorm(dims=C)", 1e-5, "last", True, "two-pass", True),
                       f"{_NORM}: LayerNorm.__init__(dims, eps=1e-5, affine=True, bias=True); __call__ "
                       f"{_FAST} over the last axis; {_ROWWISE}"),
        "rms": Cited(NormFacts("mlx.nn.RMSNorm(dims=C)", 1e-5, "last", True, "mean-square", True),
                     f"{_NORM}: RMSNorm.__init__(dims, eps=1e-5) always holds a weight; __call__ mx.fast.rms_norm; "
                     f"{_ROWWISE}"),
        "group": Cited(NormFacts("mlx.nn.GroupNorm(num_groups, dims=C)", 1e-5, "channels-last", True, "two-pass",
                                 True),
                       f"{_NORM}: GroupNorm.__init__(num_groups, dims, eps=1e-5, affine=True, "
                       f"pytorch_compatible=False); _group_norm mx.mean then mx.var; {_ROWWISE}"),
        "instance": Cited(NormFacts("mlx.nn.InstanceNorm(dims=C)", 1e-5, "channels-last", False, "two-pass", True),
                          f"{_NORM}: InstanceNorm.__init__(dims, eps=1e-5, affine=False); __call__ moves the channels "
                          f"first and runs {_FAST} over each channel's spatial values; {_ROWWISE}"),
    },
    group_layout=Cited("strided", f"{_NORM}: GroupNorm._group_norm (the default, pytorch_compatible=False) reshapes "
                                  "(batch, -1, num_groups), so channel c joins group c % num_groups; docstring "
                                  "'pytorch_compatible (bool): If True perform the group normalization in the same "
                                  "order/grouping as PyTorch. Default: False'"),
    group_layouts=Cited(("channels-last",), f"{_NORM}: GroupNorm docstring 'The feature dimension is assumed to be "
                                            "the last dimension'; InstanceNorm expects (N, ..., C)"),
    **no_running_stats(f"{_NORM}: InstanceNorm has no running statistics"),
    layer_rms_scaling=Cited(None, f"{_NORM}: LayerNorm has no rms_scaling option; RMSNorm is its own layer"),
)


class MlxNorms(NormAdapter):
    declaration = DECLARATION

    def __init__(self, spec: NormSpec):
        super().__init__(spec)
        import mlx.core as mx
        import mlx.nn as nn

        self.dt = mx_dtype(mx, spec.dtype)
        c = spec.num_features
        if spec.kind == "rms" and not spec.use_defaults and not spec.affine:
            raise Unsupported(f"mlx: RMSNorm always has a scale ({_NORM}: RMSNorm.__init__ has no affine argument)")
        if spec.kind == "instance" and spec.rank < 3:
            raise Unsupported(f"mlx: InstanceNorm takes (N, ..., C) inputs of rank 3 or more ({_NORM}: "
                              "InstanceNorm.__call__ raises ValueError)")
        kw = self.options("eps", *() if spec.kind == "rms" else ("affine",))
        self.module = {"layer": lambda: nn.LayerNorm(c, **kw), "rms": lambda: nn.RMSNorm(c, **kw),
                       "group": lambda: nn.GroupNorm(spec.groups, c, **kw),
                       "instance": lambda: nn.InstanceNorm(c, **kw)}[spec.kind]()
        if spec.dtype != "float32":
            self.module.set_dtype(self.dt)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        x = np.asarray(x) if self.spec.channels_last or self.spec.kind in ("layer", "rms") else np.moveaxis(x, 1, -1)
        self.module.train(training)
        y = mx_numpy(self.module(mx_array(x, self.dt)))
        if not self.spec.channels_last and self.spec.kind in ("group", "instance") and self.spec.rank > 2:
            y = np.moveaxis(y, -1, 1)
        return y

    def get_params(self):
        m = self.module
        get = lambda k: None if m.get(k) is None else mx_numpy(m[k]).copy()
        return get("weight"), get("bias")

    def set_params(self, scale, offset) -> None:
        for name, v in (("weight", scale), ("bias", offset)):
            a = self.module.get(name)
            if a is not None and v is not None:
                setattr(self.module, name, mx_array(v, a.dtype))

    def snippet(self) -> str:
        return f"import mlx.nn as nn\nm = nn.{self.module!r}  # spec {self.spec}"
