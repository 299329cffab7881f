"""MindSpore networks: mindspore.nn.Conv2d / BatchNorm2d / Dense in PyNative mode, trained with mindspore.value_and_grad
and mindspore.nn.SGD.

Layout: Conv2d.weight is (out, in, kh, kw) and Dense.weight (out, in), both canonical. The CPU BatchNorm2d is NCHW only
('NHWC' raises ValueError off the GPU), so a channels-last input is moved to NCHW first, as a user on the CPU must.
BN: momentum converted to mindspore's (weight of the OLD value).
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.adapters.mindspore_bn import freeze_cells, ms_numpy, ms_tensor, warm_up
from bnsuite.adapters.nets import OIHW, Network
from bnsuite.adapters.nets.layers import plan_layers, run_plan


class MindsporeNet(Network):
    weight_layout = Cited(OIHW, "mindspore/nn/layer/conv.py: _Conv.__init__ weight shape [out_channels, in_channels "
                                "// group, *kernel_size] (data_format NCHW); mindspore/nn/layer/basic.py: "
                                "Dense.__init__ weight [out_channels, in_channels]")

    def _build(self, weights, *, dtype, device, eps, momentum):
        import mindspore as ms

        self.ms, self.dtype = ms, dtype
        warm_up(ms)
        nn = ms.nn
        bn_kw = dict(eps=eps, momentum=1.0 - momentum)
        if self.recipe is not None and self.recipe.batch_statistics is not None:
            bn_kw["use_batch_statistics"] = self.recipe.batch_statistics
        if dtype != "float32":
            bn_kw["dtype"] = getattr(ms, dtype)
        self.mods = plan_layers(self.ops,
                                lambda cin, cout, k: nn.Conv2d(cin, cout, k, pad_mode="same", has_bias=True),
                                lambda c: nn.BatchNorm2d(c, **bn_kw), lambda cin, cout: nn.Dense(cin, cout))
        self.cells = nn.CellList(list(self.mods.values()))
        for name, (p, convert) in self._params().items():
            p.set_data(ms_tensor(ms, convert(np.asarray(weights[name], np.float64)), str(p.dtype).lower()))
        self.cells.set_train(True)
        if self.recipe is not None:
            freeze_cells(self.recipe, self._bns())
        self.opt = None

    def _params(self):
        """canonical name -> (live parameter, canonical -> native); the layouts are canonical already."""
        same = lambda w: w
        out = {}
        for name, m in self.mods.items():
            if isinstance(m, self.ms.nn.BatchNorm2d):
                out.update({f"{name}.scale": (m.gamma, same), f"{name}.offset": (m.beta, same),
                            f"{name}.mean": (m.moving_mean, same), f"{name}.var": (m.moving_variance, same)})
            else:
                out.update({f"{name}.kernel": (m.weight, same), f"{name}.bias": (m.bias, same)})
        return out

    def _bns(self):
        return [m for m in self.mods.values() if isinstance(m, self.ms.nn.BatchNorm2d)]

    # -- compute -----------------------------------------------------------------------------------------------------
    def _run(self, h):
        ops = self.ms.ops
        return run_plan(self.ops, self.mods.__getitem__, h, relu=ops.relu, gap=lambda a: a.mean(axis=(2, 3)),
                        cat=lambda a, c: ops.cat((a, c), axis=1))

    def _in(self, x):
        return ms_tensor(self.ms, np.moveaxis(x, -1, 1) if self.channels_last else x, self.dtype)

    def forward(self, x, training):
        modes = [m.training for m in self.mods.values()]
        for m in self.mods.values():
            m.set_train(training)
        try:
            y = self._run(self._in(x))
        finally:
            for m, mode in zip(self.mods.values(), modes):
                m.set_train(mode)
        return ms_numpy(self.ms, y)

    def sgd_step(self, x, target, lr):
        ms = self.ms
        if self.opt is None or self._lr != lr:
            self.opt = ms.nn.SGD(self.cells.trainable_params(), learning_rate=lr)
            self._lr = lr
        xt, tt = self._in(x), ms_tensor(ms, target, self.dtype)

        def loss_fn():
            return ms.ops.mse_loss(self._run(xt), tt)

        loss, grads = ms.value_and_grad(loss_fn, None, weights=self.opt.parameters)()
        self.opt(grads)
        return float(ms_numpy(ms, loss))

    def get_weights(self):
        return {k: ms_numpy(self.ms, p).copy() for k, (p, _) in self._params().items()}

    def native_kernel_shapes(self):
        return {k: tuple(p.shape) for k, (p, _) in self._params().items() if k.endswith(".kernel")}


def build(adapter_cls, arch, weights, **kw) -> MindsporeNet:
    return MindsporeNet(arch, weights, **kw)
