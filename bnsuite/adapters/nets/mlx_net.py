"""MLX networks: nn.Conv2d / nn.BatchNorm / nn.Linear in one Module, trained with nn.value_and_grad and
mlx.optimizers.SGD.

Layout: MLX is channels-last. Conv2d.weight is (out, kh, kw, in) ("OHWI"): canonical w.transpose(0, 2, 3, 1), back
w.transpose(0, 3, 1, 2); Linear.weight (out, in) is canonical. A channels-first input is moved to NHWC first, as a user
would. BN: momentum is canonical as is (it weights the new statistic, like torch's).
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.adapters.mlx_bn import freeze_module, mx_dtype, mx_numpy
from bnsuite.adapters.nets import Network, kernel_layout
from bnsuite.adapters.nets.layers import plan_layers, run_plan

OHWI = kernel_layout("OHWI", "OI")
_BN_SLOTS = {"scale": "weight", "offset": "bias", "mean": "running_mean", "var": "running_var"}


class MlxNet(Network):
    weight_layout = Cited(OHWI, "mlx/nn/layers/convolution.py: Conv2d.__init__ weight mx.random.uniform(shape=("
                                "out_channels, *kernel_size, in_channels // groups)); mlx/nn/layers/linear.py: "
                                "Linear.__init__ weight (output_dims, input_dims)")

    def _build(self, weights, *, dtype, device, eps, momentum):
        import mlx.core as mx
        import mlx.nn as nn
        import mlx.optimizers as optim

        self.mx, self.nn, self.optim = mx, nn, optim
        self.dt = mx_dtype(mx, dtype)
        mods = plan_layers(self.ops, lambda cin, cout, k: nn.Conv2d(cin, cout, k, padding=k // 2),
                           lambda c: nn.BatchNorm(c, eps=eps, momentum=momentum), nn.Linear)
        self.model = nn.Module()
        self.model.layers = {k.replace(".", "/"): m for k, m in mods.items()}
        self.mods = mods
        for name, (m, attr, convert) in self._slots().items():
            w = np.asarray(weights[name], np.float64)
            setattr(m, attr, mx.array(np.ascontiguousarray(convert(w)), dtype=mx.float64).astype(self.dt))
        if self.recipe is not None and self.recipe.freeze:
            for bn in self._bns():
                freeze_module(self.recipe, bn)
        self.opt = None

    def _slots(self):
        """canonical name -> (module, attribute, canonical -> native)."""
        out = {}
        same = lambda w: w
        for name, m in self.mods.items():
            if isinstance(m, self.nn.BatchNorm):
                out.update({f"{name}.{slot}": (m, attr, same) for slot, attr in _BN_SLOTS.items()})
            else:
                conv = isinstance(m, self.nn.Conv2d)
                out[f"{name}.kernel"] = (m, "weight", (lambda w: w.transpose(0, 2, 3, 1)) if conv else same)
                out[f"{name}.bias"] = (m, "bias", same)
        return out

    def _bns(self):
        return [m for m in self.mods.values() if isinstance(m, self.nn.BatchNorm)]

    def _run(self, h):
        mx = self.mx
        return run_plan(self.ops, self.mods.__getitem__, h, relu=self.nn.relu, gap=lambda a: mx.mean(a, axis=(1, 2)),
                        cat=lambda a, c: mx.concatenate([a, c], axis=-1))

    def _in(self, x):
        x = x if self.channels_last else np.moveaxis(x, 1, -1)
        return self.mx.array(np.ascontiguousarray(np.asarray(x, np.float64)), dtype=self.mx.float64).astype(self.dt)

    _np = staticmethod(mx_numpy)

    def forward(self, x, training):
        self.model.train(training)
        y = self._run(self._in(x))
        self.mx.eval(y, self.model.parameters())
        return self._np(y)

    def sgd_step(self, x, target, lr):
        mx = self.mx
        if self.opt is None or self._lr != lr:
            self.opt, self._lr = self.optim.SGD(learning_rate=lr), lr
        self.model.train(True)
        if self.recipe is not None:
            for bn in self._bns():
                bn.train(not self.recipe.eval_mode)
        xt = self._in(x)
        tt = mx.array(np.asarray(target, np.float64), dtype=mx.float64).astype(self.dt)

        def loss_fn(model):
            y = self._run(xt)
            return mx.mean((y - tt) ** 2)

        loss, grads = self.nn.value_and_grad(self.model, loss_fn)(self.model)
        self.opt.update(self.model, grads)
        mx.eval(loss, self.model.parameters(), self.opt.state)
        return float(self._np(loss))

    def get_weights(self):
        back = {"kernel": lambda w: w.transpose(0, 3, 1, 2)}
        out = {}
        for name, (m, attr, _) in self._slots().items():
            a = m.get(attr)
            if a is None:
                continue
            w = self._np(a)
            out[name] = back["kernel"](w) if name.endswith(".kernel") and w.ndim == 4 else w.copy()
        return out

    def native_kernel_shapes(self):
        return {name: tuple(m.get(attr).shape) for name, (m, attr, _) in self._slots().items()
                if name.endswith(".kernel")}


def build(adapter_cls, arch, weights, **kw) -> MlxNet:
    return MlxNet(arch, weights, **kw)
