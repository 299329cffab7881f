"""tinygrad networks: nn.Conv2d / nn.BatchNorm / nn.Linear, trained with nn.optim.SGD inside Context(TRAINING=1).

Layout: Conv2d.weight (out, in, kh, kw) and Linear.weight (out, in) are the canonical layouts, so weights copy over
unchanged. tinygrad has channels on axis 1 only: a channels-last input is permuted to NCHW first, as a user would.
BN: momentum is canonical as is (it weights the new statistic, like torch's).
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.adapters.nets import OIHW, Network
from bnsuite.adapters.nets.layers import plan_layers, run_plan
from bnsuite.adapters.tinygrad_bn import host_tensor, on_device, realize_step, training_mode


class TinygradNet(Network):
    weight_layout = Cited(OIHW, "tinygrad/nn/__init__.py: Conv2d.__init__ weight Tensor.uniform(out_channels, "
                                "in_channels//groups, *kernel_size); Linear.__init__ weight (out_features, "
                                "in_features)")

    def _build(self, weights, *, dtype, device, eps, momentum):
        from tinygrad import Tensor, dtypes, nn
        from tinygrad.helpers import Context

        self.Tensor, self.nn, self.dtypes = Tensor, nn, dtypes
        self.dtype, self.device = dtype, device
        with Context(DEFAULT_FLOAT=dtype), on_device(device):
            self.mods = plan_layers(self.ops, lambda cin, cout, k: nn.Conv2d(cin, cout, k, padding="same"),
                                    lambda c: nn.BatchNorm(c, eps=eps, momentum=momentum), nn.Linear)
        # Loaded as tinygrad's nn.state.load_state_dict loads (Tensor.replace: the layer keeps its Tensor objects),
        # realized in one schedule: copies, with no kernel to compile where NumPy has the dtype.
        tensors = self._tensors()
        for name, t in tensors.items():
            t.replace(self._tensor(weights[name], t.dtype))
        Tensor.realize(*tensors.values())
        self.opt = None

    def _tensors(self):
        out = {}
        for name, m in self.mods.items():
            if isinstance(m, self.nn.BatchNorm):
                out.update({f"{name}.scale": m.weight, f"{name}.offset": m.bias, f"{name}.mean": m.running_mean,
                            f"{name}.var": m.running_var})
            else:
                out.update({f"{name}.kernel": m.weight, f"{name}.bias": m.bias})
        return out

    def _run(self, h):
        return run_plan(self.ops, self.mods.__getitem__, h, relu=lambda a: a.relu(), gap=lambda a: a.mean(axis=(2, 3)),
                        cat=lambda a, c: a.cat(c, dim=1))

    def _tensor(self, a, dtype):
        with on_device(self.device):  # the case's device: every tensor of the network is made here
            return host_tensor(self.Tensor, self.dtypes, a, dtype)

    def _in(self, x):
        x = np.moveaxis(x, -1, 1) if self.channels_last else x
        return self._tensor(x, getattr(self.dtypes, self.dtype))

    def _np(self, t):
        d = self.dtypes
        return np.asarray((t.cast(d.float32) if t.dtype == d.bfloat16 else t).numpy(), np.float64)

    def _bns(self):
        return [m for m in self.mods.values() if isinstance(m, self.nn.BatchNorm)]

    def forward(self, x, training):
        with training_mode(training):
            y = self._run(self._in(x))
            realize_step(self.Tensor, self._bns(), y)
            return self._np(y)

    def sgd_step(self, x, target, lr):
        nn = self.nn
        if self.opt is None or self._lr != lr:
            self.opt = nn.optim.SGD(nn.state.get_parameters(list(self.mods.values())), lr=lr)
            self._lr = lr
        self.opt.zero_grad()
        with training_mode(self.recipe is None or self.recipe.training_forward):
            y = self._run(self._in(x))
            loss = ((y - self._tensor(target, y.dtype)) ** 2).mean()
            value = float(self._np(loss))  # realized now: the lazy graph would read the weights after the step
            realize_step(self.Tensor, self._bns())
        with training_mode(True):
            loss.backward()
            self.opt.step()
        return value

    def get_weights(self):
        return {k: self._np(v).copy() for k, v in self._tensors().items() if v is not None}

    def native_kernel_shapes(self):
        return {k: tuple(v.shape) for k, v in self._tensors().items() if k.endswith(".kernel")}


def build(adapter_cls, arch, weights, **kw) -> TinygradNet:
    return TinygradNet(arch, weights, **kw)
