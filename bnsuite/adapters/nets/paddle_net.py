"""PaddlePaddle networks: paddle.nn.Conv2D / BatchNorm2D / Linear, trained with paddle.optimizer.SGD.

Layout: Conv2D.weight is (out, in, kh, kw) like the canonical layout, but Linear.weight is (in_features,
out_features), so dense kernels are transposed both ways. Channels-last inputs run on paddle's own NHWC kernels
(data_format="NHWC" on every Conv2D and BatchNorm2D). BN: momentum converted to paddle's (weight of the OLD value).
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.adapters.nets import Network, kernel_layout
from bnsuite.adapters.nets.layers import plan_layers, run_plan
from bnsuite.adapters.paddle_bn import default_dtype, freeze_layers, grad_mode


class PaddleNet(Network):
    weight_layout = Cited(kernel_layout("OIHW", "IO"),
                          "paddle/nn/layer/conv.py: _ConvNd.__init__ filter_shape = [out_channels, in_channels // "
                          "groups, *kernel_size]; paddle/nn/layer/common.py: Linear.__init__ weight shape "
                          "[in_features, out_features]")

    def _build(self, weights, *, dtype, device, eps, momentum):
        import paddle

        self.paddle = paddle
        self.dtype = dtype
        fmt = "NHWC" if self.channels_last else "NCHW"
        self.caxis = 3 if self.channels_last else 1
        nn = paddle.nn
        bn_kw = dict(epsilon=eps, momentum=1.0 - momentum, data_format=fmt)
        if self.recipe is not None and self.recipe.use_global_stats:
            bn_kw["use_global_stats"] = True
        with default_dtype(paddle, dtype):
            self.mods = plan_layers(self.ops,
                                    lambda cin, cout, k: nn.Conv2D(cin, cout, k, padding="SAME", data_format=fmt),
                                    lambda c: nn.BatchNorm2D(c, **bn_kw), nn.Linear)
        self.layers = nn.LayerList(list(self.mods.values()))
        for name, t in self._tensors().items():
            value = np.asarray(weights[name])
            t.set_value((value.T if name.endswith(".kernel") and len(t.shape) == 2 else value).astype(dtype))
        self.layers.train()
        if self.recipe is not None:
            freeze_layers(self.recipe, self._bns())
        self.opt = None

    def _tensors(self):
        """canonical name -> live parameter (paddle keeps the running statistics as non-trainable parameters)."""
        out = {}
        for name, m in self.mods.items():
            if isinstance(m, self.paddle.nn.BatchNorm2D):
                out.update({f"{name}.scale": m.weight, f"{name}.offset": m.bias, f"{name}.mean": m._mean,
                            f"{name}.var": m._variance})
            else:
                out.update({f"{name}.kernel": m.weight, f"{name}.bias": m.bias})
        return out

    def _bns(self):
        return [m for m in self.mods.values() if isinstance(m, self.paddle.nn.BatchNorm2D)]

    # -- compute -----------------------------------------------------------------------------------------------------
    def _run(self, h):
        paddle, spatial = self.paddle, [1, 2] if self.channels_last else [2, 3]
        return run_plan(self.ops, self.mods.__getitem__, h, relu=paddle.nn.functional.relu,
                        gap=lambda a: a.mean(axis=spatial), cat=lambda a, c: paddle.concat([a, c], axis=self.caxis))

    def _in(self, x):
        return self.paddle.to_tensor(np.ascontiguousarray(x)).astype(self.dtype)

    def forward(self, x, training):
        modes = [mod.training for mod in self.mods.values()]
        for mod in self.mods.values():
            mod.train() if training else mod.eval()
        try:
            with self.paddle.no_grad():
                y = self._run(self._in(x))
        finally:
            for mod, mode in zip(self.mods.values(), modes):
                mod.training = mode
        return np.asarray(y.astype("float64").numpy())

    def sgd_step(self, x, target, lr):
        paddle = self.paddle
        if self.opt is None or self._lr != lr:
            params = [p for p in self.layers.parameters() if p.trainable]
            self.opt = paddle.optimizer.SGD(learning_rate=lr, parameters=params)
            self._lr = lr
        self.opt.clear_grad()
        with grad_mode(paddle, self.recipe):
            y = self._run(self._in(x))
            loss = paddle.nn.functional.mse_loss(y, self._in(target))
        if not loss.stop_gradient:
            loss.backward()
        self.opt.step()
        return float(loss.astype("float64").numpy())

    def get_weights(self):
        out = {}
        for k, v in self._tensors().items():
            if v is None:
                continue
            a = np.asarray(v.astype("float64").numpy()).copy()
            out[k] = a.T if k.endswith(".kernel") and a.ndim == 2 else a
        return out

    def native_kernel_shapes(self):
        return {k: tuple(v.shape) for k, v in self._tensors().items() if k.endswith(".kernel")}


def build(adapter_cls, arch, weights, **kw) -> PaddleNet:
    return PaddleNet(arch, weights, **kw)
