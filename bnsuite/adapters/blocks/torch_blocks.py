"""PyTorch blocks: nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Sigmoid, nn.Softmax in an nn.Sequential,
trained with torch.optim.SGD. Canonical layouts are torch's own; momentum is canonical as is."""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, Unsupported
from bnsuite.adapters.blocks import BlockDeclaration, Blocks

DECLARATION = BlockDeclaration(
    dropout_scaling=Cited("inverted", "torch/nn/modules/dropout.py: Dropout docstring 'the outputs are scaled by a "
                                      "factor of 1/(1-p) during training ... during evaluation the module simply "
                                      "computes an identity function'; aten/src/ATen/native/Dropout.cpp: _dropout_impl "
                                      "multiplies by the mask and divides by 1 - p"),
    bce_losses=Cited({"BCELoss": "probabilities", "BCEWithLogitsLoss": "logits"},
                     "torch/nn/modules/loss.py: BCELoss ('the input ... should be numbers between 0 and 1'), "
                     "BCEWithLogitsLoss ('combines a Sigmoid layer and the BCELoss in one single class')"),
    bce_at_probability_one=Cited({"BCELoss": "finite"},
                                 "torch/nn/modules/loss.py: BCELoss docstring 'BCELoss clamps its log function outputs "
                                 "to be greater than or equal to -100. This way, we can always have a finite loss "
                                 "value and a linear backward method'; aten/src/ATen/native/Loss.cpp: "
                                 "binary_cross_entropy_backward divides by max((1 - p) p, EPSILON)"),
)


class TorchBlocks(Blocks):
    declaration = DECLARATION

    def __init__(self, spec, weights):
        super().__init__(spec, weights)
        import torch

        self.torch = torch
        self.dtype = getattr(torch, spec.dtype)
        nn = torch.nn
        mods, width = [], spec.in_features
        self.index = {}
        for i, op in enumerate(spec.ops):
            if op[0] == "dense":
                mods.append(nn.Linear(width, op[1]))
                width = op[1]
            elif op[0] == "bn":
                mods.append(self.batchnorm(width, spec.eps, spec.momentum))
            elif op[0] == "relu":
                mods.append(nn.ReLU())
            elif op[0] == "sigmoid":
                mods.append(nn.Sigmoid())
            elif op[0] == "dropout":
                mods.append(self.dropout(spec.rate))
            elif op[0] == "softmax":
                mods.append(self.softmax(op[1]))
            self.index[op[0]] = i
        self.model = nn.Sequential(*mods).to(self.dtype)
        with torch.no_grad():
            for name, t in self._tensors().items():
                if name in weights:
                    t.copy_(torch.as_tensor(weights[name], dtype=t.dtype))

    # Hooks the broken adapters of meta_tests override.
    def batchnorm(self, width, eps, momentum):
        return self.torch.nn.BatchNorm1d(width, eps=eps, momentum=momentum)

    def dropout(self, rate):
        return self.torch.nn.Dropout(rate)

    def softmax(self, axis):
        return self.torch.nn.Softmax(dim=axis)

    def _tensors(self):
        out = {}
        if "dense" in self.index:
            m = self.model[self.index["dense"]]
            out["dense.kernel"], out["dense.bias"] = m.weight, m.bias
        if "bn" in self.index:
            m = self.model[self.index["bn"]]
            out.update({"bn.scale": m.weight, "bn.offset": m.bias, "bn.mean": m.running_mean,
                        "bn.var": m.running_var})
        return out

    def _x(self, x):
        return self.torch.as_tensor(np.asarray(x), dtype=self.dtype)

    def forward(self, x, training, seed=0):
        torch = self.torch
        torch.manual_seed(seed)
        self.model.train(training)
        outs, h = [], self._x(x)
        with torch.no_grad():
            for m in self.model:
                h = m(h)
                outs.append(h.to(torch.float64).numpy().copy())
        return outs

    def weights(self):
        return {k: v.detach().to(self.torch.float64).numpy().copy() for k, v in self._tensors().items()}

    def sgd_step(self, x, target, loss, lr):
        torch = self.torch
        if loss not in self.declaration.bce_losses.value:
            raise Unsupported(f"torch: no loss {loss!r}")
        fn = getattr(torch.nn, loss)()
        opt = torch.optim.SGD(self.model.parameters(), lr=lr)
        self.model.train(True)
        opt.zero_grad()
        value = fn(self.model(self._x(x)), self._x(target))
        value.backward()
        opt.step()
        return float(value.detach())

    def probe_model(self):
        return self.model
