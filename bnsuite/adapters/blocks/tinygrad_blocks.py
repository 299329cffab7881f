"""tinygrad blocks: nn.Linear and nn.BatchNorm, with ReLU, sigmoid, softmax and dropout as the Tensor methods tinygrad
has for them (tinygrad.nn has no layer for these), trained with nn.optim.SGD inside Context(TRAINING=1). Canonical
layouts are tinygrad's own (Linear.weight is (out, in)) and BatchNorm's momentum weights the new statistic, as the
canonical one does.

Sources: the installed tinygrad 0.14.0, tinygrad/nn/__init__.py (Linear, BatchNorm), tinygrad/mixin/rand.py
(dropout), tinygrad/mixin/elementwise.py (relu, sigmoid), tinygrad/mixin/op.py (softmax, binary_crossentropy,
binary_crossentropy_logits), tinygrad/nn/optim.py (SGD), confirmed by running them.

Every new shape is a new kernel for tinygrad to generate and compile: a block's outputs and its running statistics
are realized in one schedule, and its weights arrive as copies of host arrays (no kernel).
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, Unsupported
from bnsuite.adapters.blocks import BlockDeclaration, Blocks
from bnsuite.adapters.tinygrad_bn import host_tensor, on_device, realize_step, training_mode

_BCE = "Tensor.binary_crossentropy"
_BCE_LOGITS = "Tensor.binary_crossentropy_logits"
_OP = "tinygrad/mixin/op.py"
DECLARATION = BlockDeclaration(
    dropout_scaling=Cited("inverted", "tinygrad/mixin/rand.py: dropout 'NOTE: dropout is only applied when TRAINING "
                                      "is set'; `if not TRAINING or p == 0: return self`, else (self.rand_like(...) "
                                      ">= p).contiguous().where(self, 0) / (1.0 - p)"),
    bce_losses=Cited({_BCE: "probabilities", _BCE_LOGITS: "logits"},
                     f"{_OP}: binary_crossentropy (-Y*self.log() - (1-Y)*(1-self).log(), docstring 'See: "
                     "torch.nn.BCELoss'), binary_crossentropy_logits ('where `self` is logits': self.logsigmoid(), "
                     "(-self).logsigmoid(); 'See: torch.nn.BCEWithLogitsLoss'); reduction='mean' by default"),
    one_unit_softmax_bce=Cited(
        "zero", f"{_OP}: softmax(axis) is e * ss.reciprocal() with m = self - self.max(axis).detach(), e = m.exp(), "
                "ss = e.sum(axis): over one unit the constant 1, whose gradient is 0. The probability loss's own "
                "gradient there is not finite (1/(1 - p) at p = 1), yet observed: the weights stay bit-identical "
                "after one SGD step for both losses (the loss value of binary_crossentropy is inf)"),
    bce_at_probability_one=Cited(
        {_BCE: "non-finite loss and gradient"},
        f"{_OP}: binary_crossentropy is -Y*self.log() - (1-Y)*(1-self).log() with no clamp: at p = 1 the term "
        "(1-Y)*log(1-p) is 0 * -inf = NaN for Y = 1 and inf for Y = 0, and its gradient (1-Y)/(1-p) the same; "
        "torch's BCELoss, which its docstring cites, clamps the log at -100 (observed: loss NaN, every weight NaN "
        "after one SGD step; finding tinygrad_bce_probabilities_nan_at_one)"),
)

# The Tensor method each loss name stands for (independent of what the declaration says it takes).
_LOSSES = {_BCE: "binary_crossentropy", _BCE_LOGITS: "binary_crossentropy_logits"}


class TinygradBlocks(Blocks):
    declaration = DECLARATION
    devices = ("cpu", "gpu")

    def __init__(self, spec, weights):
        super().__init__(spec, weights)
        from tinygrad import Tensor, dtypes, nn
        from tinygrad.helpers import Context

        self.Tensor, self.nn, self.dtypes, self.dt = Tensor, nn, dtypes, getattr(dtypes, spec.dtype)
        self.layers, self.dense, self.bn = [], None, None
        width = spec.in_features
        with Context(DEFAULT_FLOAT=spec.dtype), on_device(spec.device):
            for op in spec.ops:
                if op[0] == "dense":
                    self.dense = nn.Linear(width, op[1])
                    self.layers.append(self.dense)
                    width = op[1]
                elif op[0] == "bn":
                    self.bn = nn.BatchNorm(width, eps=spec.eps, momentum=spec.momentum)
                    self.layers.append(self.bn)
                elif op[0] == "dropout":
                    self.layers.append(self.dropout(spec.rate))
                elif op[0] == "softmax":
                    self.layers.append(self.softmax(op[1]))
                else:
                    self.layers.append({"relu": Tensor.relu, "sigmoid": Tensor.sigmoid}[op[0]])
            # Loaded as nn.state.load_state_dict does (Tensor.replace keeps the layer's Tensor objects; the random
            # initial values are never realized), in one schedule.
            tensors = self._tensors()
            for name, t in tensors.items():
                t.replace(host_tensor(Tensor, dtypes, weights[name], t.dtype))
            Tensor.realize(*tensors.values())

    # Hooks the broken adapters of meta_tests override.
    def dropout(self, rate):
        return lambda x: x.dropout(rate)

    def softmax(self, axis):
        return lambda x: x.softmax(axis)

    def _tensors(self):
        out = {}
        if self.dense is not None:
            out["dense.kernel"], out["dense.bias"] = self.dense.weight, self.dense.bias
        if self.bn is not None:
            bn = self.bn
            out.update({"bn.scale": bn.weight, "bn.offset": bn.bias, "bn.mean": bn.running_mean,
                        "bn.var": bn.running_var})
        return out

    def _x(self, a):
        return host_tensor(self.Tensor, self.dtypes, a, self.dt)

    def _np(self, t):
        d = self.dtypes
        return np.asarray(t.cast(d.float64 if t.dtype == d.float64 else d.float32).numpy(), np.float64)

    def _bns(self):
        return [] if self.bn is None else [self.bn]

    def forward(self, x, training, seed=0):
        self.Tensor.manual_seed(seed)
        with on_device(self.spec.device), training_mode(training):
            outs, h = [], self._x(x)
            for layer in self.layers:
                h = layer(h)
                outs.append(h)
            realize_step(self.Tensor, self._bns(), *outs)
        return [self._np(h) for h in outs]

    def weights(self):
        return {name: self._np(t) for name, t in self._tensors().items()}

    def sgd_step(self, x, target, loss, lr):
        if loss not in _LOSSES:
            raise Unsupported(f"tinygrad: no loss {loss!r}")
        nn = self.nn
        params = [t for t in self._tensors().values() if t.is_param]
        opt = nn.optim.SGD(params, lr=lr)
        with on_device(self.spec.device), training_mode(True):
            opt.zero_grad()
            h = self._x(x)
            for layer in self.layers:
                h = layer(h)
            value = getattr(h, _LOSSES[loss])(self._x(target))
            value.backward()
            # The loss, the step and the running statistics in one schedule, as tinygrad's own training loops do
            # (loss.realize(*opt.schedule_step())): the loss reads the weights before the step's assigns.
            realize_step(self.Tensor, self._bns(), value, *opt.schedule_step())
        return float(self._np(value))
