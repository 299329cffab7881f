"""MindSpore normalization layers: mindspore.nn.LayerNorm and GroupNorm in PyNative mode on the CPU.

Sources: the installed mindspore 2.10.0, mindspore/nn/layer/normalization.py (LayerNorm, GroupNorm, InstanceNorm2d),
confirmed by running them.
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, Unsupported
from bnsuite.adapters.mindspore_bn import dtype_str, ms_numpy, ms_tensor, warm_up
from bnsuite.adapters.norms import NormAdapter, NormDeclaration, NormFacts, NormSpec, no_running_stats

_NORM = "mindspore/nn/layer/normalization.py"
_ROWWISE = "each sample is normalized with its own statistics; observed bitwise between batches of 8, 3 and 1 on " \
           "mindspore 2.10.0 CPU"

_LAYER = Cited(NormFacts("mindspore.nn.LayerNorm(normalized_shape=(C,))", 1e-7, "last", True, "two-pass", True),
               f"{_NORM}: LayerNorm.__init__(normalized_shape, begin_norm_axis=-1, begin_params_axis=-1, "
               "gamma_init='ones', beta_init='zeros', epsilon=1e-7) (1e-7, not the 1e-5 of the others; the "
               "docstring announces epsilon -> eps and a change of the signature), ops.LayerNorm over the "
               f"axes from begin_norm_axis; {_ROWWISE}")
_GROUP = Cited(NormFacts("mindspore.nn.GroupNorm(num_groups, num_channels)", 1e-5, "channels-first", True,
                         "two-pass", True),
               f"{_NORM}: GroupNorm.__init__(num_groups, num_channels, eps=1e-05, affine=True); "
               f"_cal_output -> ops.group_norm (compiled; float32 inputs of mean 1e4 and spread 1 normalize "
               f"to 1e-7, observed); {_ROWWISE}")

DECLARATION = NormDeclaration(
    framework="mindspore",
    kinds={"layer": _LAYER, "group": _GROUP},
    missing={"rms": f"mindspore.nn has no RMSNorm layer ({_NORM} defines none; mindspore.mint.nn has none either)",
             "instance": f"{_NORM}: InstanceNorm2d.construct runs P.InstanceNorm, which has no CPU kernel "
                         "(RuntimeError on the CPU; its docstring lists GPU only)"},
    layer_rms_scaling=Cited(None, f"{_NORM}: LayerNorm.__init__ has no rms_scaling option"),
    **no_running_stats(f"{_NORM}: the CPU has no InstanceNorm (missing['instance'])"),
    group_layouts=Cited(("channels-first",), f"{_NORM}: GroupNorm._channel_check compares 'the second dim of the "
                                             "input' with num_channels (NCHW only; no data_format)"),
    group_layout=Cited("contiguous", f"{_NORM}: GroupNorm docstring 'divides the channels into groups' (the Group "
                                     "Normalization paper's contiguous groups); observed contiguous on mindspore "
                                     "2.10.0"),
)


class MindsporeNorms(NormAdapter):
    """One mindspore norm layer in PyNative mode on the CPU (the framework row's device probe keeps other devices
    out)."""

    declaration = DECLARATION

    def __init__(self, spec: NormSpec):
        import mindspore as ms

        super().__init__(spec)
        self.ms = ms
        warm_up(ms)
        c, nn = spec.num_features, ms.nn
        dt = {} if spec.dtype == "float32" else {"dtype": getattr(ms, spec.dtype)}
        if spec.kind == "layer":
            if not spec.affine and not spec.use_defaults:
                raise Unsupported(f"mindspore LayerNorm always has gamma and beta ({_NORM}: LayerNorm.__init__ has "
                                  "no affine argument)")
            self.layer = nn.LayerNorm((c,), **({} if spec.use_defaults else {"epsilon": spec.eps}), **dt)
        else:
            self.layer = nn.GroupNorm(spec.groups, c, **self.options("eps", "affine"), **dt)
        self.affine = spec.affine or spec.use_defaults

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self.layer.set_train(training)
        return ms_numpy(self.ms, self.layer(ms_tensor(self.ms, np.asarray(x), self.spec.dtype)))

    def _params(self):
        return (self.layer.gamma, self.layer.beta) if self.affine else (None, None)

    def get_params(self):
        return tuple(None if p is None else ms_numpy(self.ms, p).copy() for p in self._params())

    def set_params(self, scale, offset) -> None:
        for p, v in zip(self._params(), (scale, offset)):
            if p is not None and v is not None:
                p.set_data(ms_tensor(self.ms, np.asarray(v), dtype_str(p)))

    def snippet(self) -> str:
        return f"import mindspore\nm = mindspore.nn.{self.layer!r}  # spec {self.spec}"
