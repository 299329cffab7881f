"""PyTorch networks: nn.Conv2d / nn.BatchNorm2d / nn.Linear, trained with torch.optim.SGD.

Layout: torch's own layouts ARE the canonical ones (Conv2d.weight (out, in, kh, kw), Linear.weight (out, in)), so
weights copy over unchanged. A channels-last input (N, H, W, C) is moved to torch's logical NCHW and made
channels_last-contiguous (the way torch users run channels-last data). BN: momentum is canonical as is.
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.adapters.nets import OIHW, Network, bn_names
from bnsuite.adapters.nets.layers import run_plan
from bnsuite.adapters.torch_bn import freeze_modules, grad_mode



def _key(name: str) -> str:
    return name.replace(".", "_")  # module names cannot hold dots


class TorchNet(Network):
    weight_layout = Cited(OIHW, "torch/nn/modules/conv.py _ConvNd.__init__: weight (out_channels, in_channels // groups, "
                                "*kernel_size); torch/nn/modules/linear.py Linear.__init__: weight (out_features, "
                                "in_features)")

    def _build(self, weights, *, dtype, device, eps, momentum):
        import torch

        self.torch = torch
        self.dtype = getattr(torch, dtype)
        self.device = torch.device("cuda" if device == "gpu" else "cpu")
        mods = torch.nn.ModuleDict()
        nn = torch.nn
        for op in self.ops:
            if op[0] == "conv":
                mods[_key(op[1])] = nn.Conv2d(op[2], op[3], op[4], padding="same")
            elif op[0] == "bn":
                mods[_key(op[1])] = nn.BatchNorm2d(op[2], eps=eps, momentum=momentum)
            elif op[0] == "dense":
                mods[_key(op[1])] = nn.Linear(op[2], op[3])
            elif op[0] == "block":
                mods[_key(f"{op[1]}.bn")] = nn.BatchNorm2d(op[2], eps=eps, momentum=momentum)
                mods[_key(f"{op[1]}.conv")] = nn.Conv2d(op[2], op[3], 1)
        self.mods = mods.to(self.device, self.dtype)
        self._bn_keys = [_key(n) for n in bn_names(self.arch)]
        with torch.no_grad():
            for name, t in self._tensors().items():
                t.copy_(torch.as_tensor(weights[name], dtype=t.dtype))
        self.mods.train(True)
        self._kept = None
        if self.recipe is not None:
            kept = freeze_modules(self.recipe, self._bns(), self.mods)
            self._kept = kept and dict(zip(bn_names(self.arch), kept))
        self.opt = None

    def _tensors(self):
        """canonical name -> parameter or buffer (live)."""
        out = {}
        for op in self.ops:
            names = []
            if op[0] in ("conv", "dense"):
                names = [(op[1], "conv")]
            elif op[0] == "bn":
                names = [(op[1], "bn")]
            elif op[0] == "block":
                names = [(f"{op[1]}.bn", "bn"), (f"{op[1]}.conv", "conv")]
            for name, kind in names:
                m = self.mods[_key(name)]
                if kind == "conv":
                    out[f"{name}.kernel"], out[f"{name}.bias"] = m.weight, m.bias
                else:
                    out[f"{name}.scale"], out[f"{name}.offset"] = m.weight, m.bias
                    mean, var = m.running_mean, m.running_var
                    if mean is None and self._kept is not None:  # detached by replace_all_batch_norm_modules_
                        mean, var = self._kept[name]
                    out[f"{name}.mean"], out[f"{name}.var"] = mean, var
        return out

    def _bns(self):
        return [self.mods[k] for k in self._bn_keys]

    # -- compute --------------------------------------------------------------------------------------------------------
    def _in(self, x):
        t = self.torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self.dtype)
        if self.channels_last:
            t = t.movedim(-1, 1).contiguous(memory_format=self.torch.channels_last)
        return t

    def _run(self, h):
        torch = self.torch
        return run_plan(self.ops, lambda name: self.mods[_key(name)], h, relu=torch.relu,
                        gap=lambda a: a.mean(dim=(2, 3)), cat=lambda a, c: torch.cat([a, c], dim=1))

    def forward(self, x, training):
        torch = self.torch
        modes = [mod.training for mod in self.mods.modules()]
        self.mods.train(training)
        try:
            with torch.no_grad():
                y = self._run(self._in(x))
        finally:
            for mod, mode in zip(self.mods.modules(), modes):
                mod.training = mode
        return y.detach().to("cpu", torch.float64).numpy()

    def sgd_step(self, x, target, lr):
        torch = self.torch
        if self.opt is None or self._lr != lr:
            self.opt = torch.optim.SGD(self.mods.parameters(), lr=lr)
            self._lr = lr
        self.opt.zero_grad(set_to_none=True)
        with grad_mode(torch, self.recipe):
            y = self._run(self._in(x))
            loss = torch.nn.functional.mse_loss(y, torch.as_tensor(np.asarray(target), dtype=y.dtype,
                                                                   device=self.device))
        if loss.requires_grad:
            loss.backward()
        self.opt.step()
        return float(loss.detach().to("cpu", torch.float64))

    def get_weights(self):
        return {k: v.detach().to("cpu", self.torch.float64).numpy().copy() for k, v in self._tensors().items()
                if v is not None}

    def native_kernel_shapes(self):
        return {k: tuple(v.shape) for k, v in self._tensors().items() if k.endswith(".kernel")}


def build(adapter_cls, arch, weights, **kw) -> TorchNet:
    return TorchNet(arch, weights, **kw)
