"""PaddlePaddle blocks: paddle.nn.Linear, BatchNorm1D, ReLU, Dropout, Sigmoid, Softmax in a paddle.nn.Sequential,
trained with paddle.optimizer.SGD (dynamic-graph mode). Linear holds its weight (in, out), the transpose of the
canonical (out, in); BatchNorm1D's momentum weights the old value, so canonical m is paddle's 1 - m.

Sources: the installed paddlepaddle 3.3.1, python/paddle/nn/layer/common.py (Linear, Dropout),
python/paddle/nn/layer/loss.py (BCELoss, BCEWithLogitsLoss), confirmed by running them.
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, Unsupported
from bnsuite.adapters.blocks import BlockDeclaration, Blocks

DECLARATION = BlockDeclaration(
    bce_losses=Cited({"BCELoss": "probabilities", "BCEWithLogitsLoss": "logits"},
                     "paddle/nn/layer/loss.py: BCELoss ('Out = -1 * (label * log(input) + (1 - label) * log(1 - "
                     "input))', input probabilities), BCEWithLogitsLoss ('Combine the sigmoid layer and the "
                     "BCELoss layer')"),
    dropout_scaling=Cited("inverted", "paddle/nn/layer/common.py: Dropout.__init__(p=0.5, axis=None, "
                                      "mode='upscale_in_train'); docstring 'upscale_in_train (default), upscale the "
                                      "output at training time - train: out = input * mask / (1.0 - p) - inference: "
                                      "out = input'"),
    bce_at_probability_one=Cited({"BCELoss": "finite"},
                                 "paddle/phi/kernels/cpu/bce_loss_kernel.cc: BCELossKernel takes "
                                 "std::max(real_log(1 - x), -100) and std::max(real_log(x), -100); "
                                 "bce_loss_grad_kernel.cc: dx = dout * (x - label) / max((1 - x) x, 1e-12), as torch"),
)

# canonical weight name -> (op kind, paddle attribute, transposed)
_SLOTS = {"dense.kernel": ("dense", "weight", True), "dense.bias": ("dense", "bias", False),
          "bn.scale": ("bn", "weight", False), "bn.offset": ("bn", "bias", False),
          "bn.mean": ("bn", "_mean", False), "bn.var": ("bn", "_variance", False)}


class PaddleBlocks(Blocks):
    declaration = DECLARATION

    def __init__(self, spec, weights):
        super().__init__(spec, weights)
        import paddle

        from bnsuite.adapters.paddle_bn import default_dtype

        self.paddle = paddle
        nn, width, layers, self.at = paddle.nn, spec.in_features, [], {}
        with default_dtype(paddle, spec.dtype):
            for op in spec.ops:
                self.at[op[0]] = len(layers)
                if op[0] == "dense":
                    layers.append(nn.Linear(width, op[1]))
                    width = op[1]
                elif op[0] == "bn":
                    layers.append(nn.BatchNorm1D(width, momentum=1.0 - spec.momentum, epsilon=spec.eps))
                elif op[0] == "dropout":
                    layers.append(nn.Dropout(spec.rate))
                elif op[0] == "softmax":
                    layers.append(nn.Softmax(axis=op[1]))
                else:
                    layers.append({"relu": nn.ReLU, "sigmoid": nn.Sigmoid}[op[0]]())
        self.model = nn.Sequential(*layers)
        for name, value in weights.items():
            t = self._slot(name)
            if t is not None:
                t.set_value(np.asarray(value.T if _SLOTS[name][2] else value).astype(spec.dtype))

    def _slot(self, name):
        kind, attr, _ = _SLOTS[name]
        return getattr(self.model[self.at[kind]], attr) if kind in self.at else None

    def _x(self, x):
        return self.paddle.to_tensor(np.ascontiguousarray(x)).astype(self.spec.dtype)

    def forward(self, x, training, seed=0):
        self.paddle.seed(seed)
        self.model.train() if training else self.model.eval()
        outs, h = [], self._x(x)
        with self.paddle.no_grad():
            for layer in self.model:
                h = layer(h)
                outs.append(np.asarray(h.astype("float64").numpy(), np.float64))
        return outs

    def weights(self):
        out = {}
        for name, (_, _, transposed) in _SLOTS.items():
            t = self._slot(name)
            if t is not None:
                v = np.asarray(t.astype("float64").numpy(), np.float64)
                out[name] = v.T.copy() if transposed else v
        return out

    def sgd_step(self, x, target, loss, lr):
        paddle = self.paddle
        if loss not in self.declaration.bce_losses.value:
            raise Unsupported(f"paddle: no loss {loss!r}")
        opt = paddle.optimizer.SGD(learning_rate=lr, parameters=self.model.parameters())
        self.model.train()
        opt.clear_grad()
        value = getattr(paddle.nn, loss)()(self.model(self._x(x)), self._x(target))
        value.backward()
        opt.step()
        return float(value.numpy())
