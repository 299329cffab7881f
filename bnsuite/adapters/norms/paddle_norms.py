"""PaddlePaddle normalization layers: paddle.nn.LayerNorm, GroupNorm, InstanceNorm1D/2D (dynamic-graph mode).

Sources: the installed paddlepaddle 3.3.1, python/paddle/nn/layer/norm.py (the layers) and
python/paddle/nn/functional/norm.py (layer_norm, group_norm, instance_norm -> _C_ops), confirmed by running them.
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, Unsupported
from bnsuite.adapters.norms import NormAdapter, NormDeclaration, NormFacts, NormSpec

_NORM = "paddle/nn/layer/norm.py"
_F = "paddle/nn/functional/norm.py"
_ROWWISE = "each sample is normalized with its own statistics; observed bitwise between batches of 8, 3 and 1 on " \
           "paddle 3.3.1 CPU"
_GROUP_KERNEL = ("paddle/phi/kernels/cpu/group_norm_kernel.cc: GroupNormKernel sums x and x * x in one pass, then "
                 "x_var = std::max(x_var - x_mean * x_mean, T(0)) (E[x^2] - E[x]^2, clamped at 0)")

_INSTANCE_SOURCE = (
    f"{_NORM}: _InstanceNormBase.__init__(epsilon=1e-5, momentum=0.9, weight_attr=None, bias_attr=None) creates "
    "scale (ones) and bias (zeros) unless both attrs are False: affine by default, unlike torch; "
    f"{_F}: instance_norm -> _C_ops.instance_norm(x, weight, bias, eps); "
    "paddle/phi/kernels/cpu/instance_norm_kernel.cc: InstanceNormKernel reshapes x to (N * C, sample_size) and "
    "reduces the rows together with Eigen (x_arr.mean, then (x_arr - mean).square().mean: two-pass): observed NOT "
    "bitwise between a batch of 8 and of 1 or 3 on paddle 3.3.1 CPU (last-bit differences, within the rounding bound)")

DECLARATION = NormDeclaration(
    framework="paddle",
    kinds={
        "layer": Cited(NormFacts(layer="paddle.nn.LayerNorm(normalized_shape=C)", default_eps=1e-5,
                                 default_axes="last", default_affine=True, variance="two-pass",
                                 bitwise_batch_independent=True),
                       f"{_NORM}: LayerNorm.__init__(normalized_shape, epsilon=1e-5, elementwise_affine=True); "
                       f"{_F}: layer_norm -> _C_ops.layer_norm(x, weight, bias, epsilon, begin_norm_axis) over the "
                       f"trailing normalized_shape axes; {_ROWWISE}"),
        "group": Cited(NormFacts(layer="paddle.nn.GroupNorm(num_groups, num_channels)", default_eps=1e-5,
                                 default_axes="channels-first", default_affine=True, variance="one-pass",
                                 bitwise_batch_independent=True),
                       f"{_NORM}: GroupNorm.__init__(num_groups, num_channels, epsilon=1e-5, affine=True, "
                       f"data_format='NCHW'); {_F}: group_norm -> _C_ops.group_norm; {_GROUP_KERNEL}; {_ROWWISE}"),
        "instance": Cited(NormFacts(layer="paddle.nn.InstanceNorm1D/2D(num_features)", default_eps=1e-5,
                                    default_axes="channels-first", default_affine=True, variance="two-pass",
                                    bitwise_batch_independent=False), _INSTANCE_SOURCE),
    },
    missing={"rms": f"paddle.nn has no RMSNorm layer ({_NORM} defines none; only the function "
                    "paddle.nn.functional.rms_norm exists)"},
    instance_running_stats=Cited(None, f"{_NORM}: _InstanceNormBase.forward passes no running statistics; {_F}: "
                                       "instance_norm docstring 'running_mean ... Obsolete (that is, no longer "
                                       "usable)', 'use_input_stats ... Obsolete'"),
    instance_running_stats_default=Cited(False, f"{_NORM}: _InstanceNormBase creates no running statistics"),
    layer_rms_scaling=Cited(None, f"{_NORM}: LayerNorm.__init__ has no rms_scaling option"),
    group_layout=Cited("contiguous", f"{_NORM}: GroupNorm docstring 'num_groups: The number of groups that divided "
                                     "from channels' (the Group Normalization paper's contiguous groups); observed "
                                     "contiguous on paddle 3.3.1"),
    group_layouts=Cited(("channels-first", "channels-last"),
                        f"{_NORM}: GroupNorm.__init__ accepts data_format 'NCL', 'NCHW', 'NCDHW', 'NLC', 'NHWC', "
                        "'NDHWC'; _InstanceNormBase takes data_format: Literal['NCHW'] only (the adapter builds "
                        "InstanceNorm for channels-first input)"),
)

# rank -> the InstanceNorm class that takes it (_check_input_dim of each)
_INSTANCE = {3: "InstanceNorm1D", 4: "InstanceNorm2D", 5: "InstanceNorm3D"}


class PaddleNorms(NormAdapter):
    """One paddle norm layer in dynamic-graph mode on the CPU, built under the spec's default dtype."""

    declaration = DECLARATION

    def __init__(self, spec: NormSpec):
        super().__init__(spec)
        if spec.device != "cpu":
            raise Unsupported(f"the paddle norms build CPU layers only, not {spec.device}")
        import paddle

        from bnsuite.adapters.paddle_bn import default_dtype

        self.paddle = paddle
        c, nn = spec.num_features, paddle.nn
        own = {} if spec.use_defaults else {"epsilon": spec.eps}
        off = {} if spec.use_defaults or spec.affine else {"weight_attr": False, "bias_attr": False}
        with default_dtype(paddle, spec.dtype):
            if spec.kind == "layer":
                self.layer = nn.LayerNorm(c, **own, **off)
            elif spec.kind == "group":
                fmt = {} if spec.use_defaults else {"data_format": "NHWC" if spec.channels_last else "NCHW"}
                self.layer = nn.GroupNorm(spec.groups, c, **own, **off, **fmt)
            else:
                if spec.channels_last and spec.rank > 2:
                    raise Unsupported(f"paddle InstanceNorm takes channels-first input only ({_NORM}: "
                                      "_InstanceNormBase data_format: Literal['NCHW']; _C_ops.instance_norm takes "
                                      "no data_format)")
                if spec.rank not in _INSTANCE:
                    raise Unsupported(f"paddle InstanceNorm takes rank 3 to 5 here ({_NORM}: _check_input_dim), "
                                      f"not rank {spec.rank}")
                self.layer = getattr(nn, _INSTANCE[spec.rank])(c, **own, **off)
        self.scale_name = "scale" if spec.kind == "instance" else "weight"

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self.layer.train() if training else self.layer.eval()
        xt = self.paddle.to_tensor(np.ascontiguousarray(x)).astype(self.spec.dtype)
        with self.paddle.no_grad():
            y = self.layer(xt)
        return np.asarray(y.astype("float64").numpy(), np.float64)

    def _tensors(self):
        return getattr(self.layer, self.scale_name, None), getattr(self.layer, "bias", None)

    def get_params(self):
        return tuple(None if t is None else np.asarray(t.astype("float64").numpy(), np.float64)
                     for t in self._tensors())

    def set_params(self, scale, offset) -> None:
        for t, v in zip(self._tensors(), (scale, offset)):
            if t is not None and v is not None:
                t.set_value(np.asarray(v).astype(str(t.dtype).replace("paddle.", "")))

    def snippet(self) -> str:
        return f"import paddle\nm = paddle.nn.{self.layer!r}  # spec {self.spec}"
