"""tinygrad normalization layers: tinygrad.nn.LayerNorm, RMSNorm, GroupNorm, InstanceNorm (channels first).

Sources: the installed tinygrad 0.14.0, tinygrad/nn/__init__.py (the layers) and tinygrad/mixin/op.py
(Tensor.layernorm, which GroupNorm and InstanceNorm reshape into), confirmed by running them.
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, Unsupported
from bnsuite.adapters.norms import NormAdapter, NormDeclaration, NormFacts, NormSpec, no_running_stats
# the adapter module sets tinygrad's kernel cache and compile settings before tinygrad is imported
from bnsuite.adapters.tinygrad_bn import on_device

_NN = "tinygrad/nn/__init__.py"
_LN = ("tinygrad/mixin/op.py: layernorm, y = self - self.mean(axis, keepdim=True); "
       "y.mul((y*y).mean(axis, keepdim=True).add(eps).rsqrt()) (two-pass)")
_ROWWISE = "no op reduces over the batch axis; observed bitwise between batches of 8, 3 and 1 on tinygrad 0.14.0 CPU"
_RESHAPE = "x.reshape(x.shape[0], {}, -1).layernorm(eps=self.eps).reshape(x.shape)"


# kind -> (layer, default eps, default axes, variance algorithm, bitwise batch-independent); every one is affine by
# default (a learned scale, and an offset except RMSNorm's)
_FACTS = {
    "layer": ("tinygrad.nn.LayerNorm(normalized_shape=C)", 1e-5, "last", "two-pass", True),
    "rms": ("tinygrad.nn.RMSNorm(dim=C)", 1e-6, "last", "mean-square", True),
    "group": ("tinygrad.nn.GroupNorm(num_groups, num_channels)", 1e-5, "channels-first", "two-pass", True),
    "instance": ("tinygrad.nn.InstanceNorm(num_features)", 1e-5, "channels-first", "two-pass", True),
}
_SOURCES = {
    "layer": f"{_NN}: LayerNorm.__init__(normalized_shape, eps=1e-5, elementwise_affine=True), __call__ "
             f"x.layernorm(eps, axis=the trailing normalized_shape axes); {_LN}; {_ROWWISE}",
    "rms": f"{_NN}: RMSNorm.__init__(dim, eps=1e-6, elementwise_affine=True), _norm "
           f"x * (x.square().mean(-1, keepdim=True) + self.eps).rsqrt() on x.float(); {_ROWWISE}",
    "group": f"{_NN}: GroupNorm.__init__(num_groups, num_channels, eps=1e-5, affine=True), __call__ "
             f"{_RESHAPE.format('self.num_groups')}; {_LN}; {_ROWWISE}",
    "instance": f"{_NN}: InstanceNorm.__init__(num_features, eps=1e-5, affine=True): affine by default, unlike torch; "
                f"__call__ {_RESHAPE.format('self.num_features')}; {_LN}; {_ROWWISE}",
}
_KINDS = {kind: Cited(NormFacts(layer, eps, axes, True, variance, bitwise), _SOURCES[kind])
          for kind, (layer, eps, axes, variance, bitwise) in _FACTS.items()}
DECLARATION = NormDeclaration(
    "tinygrad", _KINDS,
    layer_rms_scaling=Cited(None, f"{_NN}: LayerNorm has no rms_scaling option; RMSNorm is its own layer"),
    **no_running_stats(f"{_NN}: InstanceNorm keeps no running statistics"),
    group_layout=Cited("contiguous", f"{_NN}: GroupNorm.__call__ {_RESHAPE.format('self.num_groups')} on (N, C, "
                                     "...): group g holds channels [g*C/G, (g+1)*C/G)"),
    group_layouts=Cited(("channels-first",), f"{_NN}: GroupNorm and InstanceNorm reshape x.shape[0], groups, -1 "
                                             "and broadcast the weight as (1, -1, 1, ...): the channels on axis 1"),
)


class TinygradNorms(NormAdapter):
    """One tinygrad norm layer on the case's device; the mode is not read."""

    declaration = DECLARATION

    def __init__(self, spec: NormSpec):
        super().__init__(spec)
        from tinygrad import Tensor, dtypes, nn
        from tinygrad.helpers import Context

        self.Tensor, self.dt = Tensor, getattr(dtypes, spec.dtype)
        self.wide = dtypes.float64 if spec.dtype == "float64" else dtypes.float32
        c = spec.num_features
        kw = {} if spec.use_defaults else {"eps": spec.eps}
        with Context(DEFAULT_FLOAT=spec.dtype), on_device(spec.device):
            if spec.kind == "layer":
                self.layer = nn.LayerNorm(c, **kw, **({} if spec.use_defaults else
                                                      {"elementwise_affine": spec.affine}))
            elif spec.kind == "rms":
                self.layer = nn.RMSNorm(c, **kw, **({} if spec.use_defaults else {"elementwise_affine": spec.affine}))
            else:
                if spec.kind == "instance" and spec.rank < 3:
                    raise Unsupported("tinygrad InstanceNorm cases cover inputs with spatial axes (rank 3 or more)")
                args = (spec.groups, c) if spec.kind == "group" else (c,)
                cls = nn.GroupNorm if spec.kind == "group" else nn.InstanceNorm
                self.layer = cls(*args, **kw, **({} if spec.use_defaults else {"affine": spec.affine}))

    def _t(self, a):
        with on_device(self.spec.device):
            return self.Tensor(np.ascontiguousarray(np.asarray(a, np.float64 if self.spec.dtype == "float64" else
                                                               np.float32))).cast(self.dt)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        # the same function in training and inference: tinygrad's norms read no mode
        return np.asarray(self.layer(self._t(x)).cast(self.wide).numpy(), np.float64)

    def get_params(self):
        return tuple(None if t is None else np.asarray(t.cast(self.wide).numpy(), np.float64)
                     for t in (getattr(self.layer, "weight", None), getattr(self.layer, "bias", None)))

    def set_params(self, scale, offset) -> None:
        for name, v in (("weight", scale), ("bias", offset)):
            if getattr(self.layer, name, None) is not None and v is not None:
                setattr(self.layer, name, self._t(v).realize())

    def snippet(self) -> str:
        return f"from tinygrad import nn\nm = nn.{type(self.layer).__name__}(...)  # spec {self.spec}"
