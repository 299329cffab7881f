"""MLX blocks: mlx.nn.Linear, BatchNorm, ReLU, Dropout, Sigmoid and a softmax in an mlx.nn.Sequential, trained with
mlx.optimizers.SGD through nn.value_and_grad. Canonical layouts are MLX's own (Linear.weight is (out, in)) and
BatchNorm's momentum weights the new statistic, as the canonical one does.

Sources: the installed mlx 0.32.4, mlx/nn/layers/dropout.py (Dropout), mlx/nn/layers/activations.py (ReLU, Sigmoid,
Softmax), mlx/nn/losses.py (binary_cross_entropy), confirmed by running them.
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, Unsupported
from bnsuite.adapters.blocks import BlockDeclaration, Blocks
from bnsuite.adapters.mlx_bn import mx_dtype, mx_numpy

_LOSS = "nn.losses.binary_cross_entropy"
DECLARATION = BlockDeclaration(
    dropout_scaling=Cited("inverted", "mlx/nn/layers/dropout.py: Dropout docstring 'The remaining elements are "
                                      "multiplied with 1/(1-p)'; __call__ returns x when not self.training, else "
                                      "(mask * x) * (1 / self._p_1) with mask = mx.random.bernoulli(self._p_1, "
                                      "x.shape)"),
    bce_losses=Cited({f"{_LOSS}(with_logits=True)": "logits", f"{_LOSS}(with_logits=False)": "probabilities"},
                     "mlx/nn/losses.py: binary_cross_entropy(inputs, targets, weights=None, with_logits=True, "
                     "reduction='mean'), docstring 'If with_logits is True, then inputs are unnormalized logits. "
                     "Otherwise, inputs are probabilities' (the default takes logits, unlike torch's BCELoss)"),
    one_unit_softmax_bce=Cited(
        {f"{_LOSS}(with_logits=True)": "zero", f"{_LOSS}(with_logits=False)": "nan"},
        "mlx/nn/layers/activations.py: Softmax.__call__ is softmax(x) = mx.softmax(x, axis=-1), the constant 1 over "
        "one unit, whose Jacobian is 0; mlx/nn/losses.py: binary_cross_entropy with_logits=True is "
        "mx.logaddexp(0.0, inputs) - inputs * targets (finite: the gradient stays 0), with_logits=False is "
        "mx.clip(mx.log(1 - inputs), a_min=-100): at inputs = 1 the clip keeps the loss finite but its gradient is "
        "0 * d log(1 - p)/dp = 0 * inf = NaN, which the softmax's zero Jacobian cannot cancel (observed: one SGD "
        "step makes every weight NaN; finding mlx_bce_probabilities_nan_gradient_at_one)"),
    bce_at_probability_one=Cited(
        {f"{_LOSS}(with_logits=False)": "non-finite gradient"},
        "mlx/nn/losses.py: binary_cross_entropy with_logits=False is mx.clip(mx.log(inputs), a_min=-100) and "
        "mx.clip(mx.log(1 - inputs), a_min=-100): the clip keeps the loss finite at inputs = 1, its gradient is "
        "0 * d log(1 - p)/dp = NaN (finding mlx_bce_probabilities_nan_gradient_at_one)"),
)

# The call each loss name stands for (independent of what the declaration says it takes, which the suite checks).
_WITH_LOGITS = {f"{_LOSS}(with_logits=True)": True, f"{_LOSS}(with_logits=False)": False}

# canonical weight name -> (op kind, MLX attribute)
_SLOTS = {"dense.kernel": ("dense", "weight"), "dense.bias": ("dense", "bias"), "bn.scale": ("bn", "weight"),
          "bn.offset": ("bn", "bias"), "bn.mean": ("bn", "running_mean"), "bn.var": ("bn", "running_var")}


class MlxBlocks(Blocks):
    declaration = DECLARATION

    def __init__(self, spec, weights):
        super().__init__(spec, weights)
        import mlx.core as mx
        import mlx.nn as nn

        self.mx, self.nn, self.dt = mx, nn, mx_dtype(mx, spec.dtype)
        make = {"dense": lambda op, width: nn.Linear(width, op[1]),
                "bn": lambda op, width: nn.BatchNorm(width, eps=spec.eps, momentum=spec.momentum),
                "dropout": lambda op, width: nn.Dropout(spec.rate),
                "softmax": lambda op, width: self.softmax(op[1]),
                "relu": lambda op, width: nn.ReLU(), "sigmoid": lambda op, width: nn.Sigmoid()}
        layers, width = [], spec.in_features
        for op in spec.ops:
            layers.append(make[op[0]](op, width))
            width = op[1] if op[0] == "dense" else width
        self.at = {op[0]: i for i, op in enumerate(spec.ops)}
        self.model = nn.Sequential(*layers)
        for name, value in weights.items():
            kind, attr = _SLOTS[name]
            if kind in self.at:
                setattr(self.model.layers[self.at[kind]], attr, self._x(value))

    # A hook the broken adapters of meta_tests override.
    def softmax(self, axis):
        """nn.Softmax takes no axis (it always normalizes the last one); any other axis is nn.softmax's argument."""
        nn = self.nn
        if axis == -1:
            return nn.Softmax()

        class SoftmaxOverAxis(nn.Module):
            def __call__(self, x):
                return nn.softmax(x, axis=axis)

        return SoftmaxOverAxis()

    def _x(self, a):
        """float64 NumPy -> the block's dtype, through an explicit float64 array (a bare mx.array of a float64
        ndarray is float32)."""
        mx = self.mx
        return mx.array(np.ascontiguousarray(np.asarray(a, np.float64)), dtype=mx.float64).astype(self.dt)

    _np = staticmethod(mx_numpy)

    def forward(self, x, training, seed=0):
        mx = self.mx
        mx.random.seed(seed)
        self.model.train(training)
        outs, h = [], self._x(x)
        for layer in self.model.layers:
            h = layer(h)
            outs.append(h)
        mx.eval(outs, self.model.parameters())
        return [self._np(h) for h in outs]

    def weights(self):
        return {name: self._np(self.model.layers[self.at[kind]][attr])
                for name, (kind, attr) in _SLOTS.items() if kind in self.at}

    def sgd_step(self, x, target, loss, lr):
        import mlx.optimizers as optim

        mx, nn = self.mx, self.nn
        if loss not in _WITH_LOGITS:
            raise Unsupported(f"mlx: no loss {loss!r}")
        with_logits = _WITH_LOGITS[loss]
        xt, tt = self._x(x), self._x(target)

        def loss_fn(model):
            return nn.losses.binary_cross_entropy(model(xt), tt, with_logits=with_logits)

        self.model.train(True)
        value, grads = nn.value_and_grad(self.model, loss_fn)(self.model)
        optim.SGD(learning_rate=lr).update(self.model, grads)
        mx.eval(value, self.model.parameters())
        return float(value.astype(mx.float32).item())
