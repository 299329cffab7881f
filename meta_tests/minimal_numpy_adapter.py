"""The documented example for authors of a new BatchNorm: a plain-NumPy BatchNorm and the smallest adapter that joins
the suite, with only the four required methods (declare, forward, get_state, set_state).

Everything optional (backward, state_dtypes, hyperparameters, freeze idioms, networks, masks, several axes, ...) is
left out on purpose: the suites skip those cases and say which capability is missing. Run the whole suite on it with

    python -m pytest bnsuite/suites --adapter meta_tests.minimal_numpy_adapter:MinimalNumpyBatchNorm

(meta_tests/test_minimal_adapter.py does, and asserts that nothing fails).
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import BatchNormAdapter, Cited, Declaration, State, Unsupported

_SRC = "meta_tests/minimal_numpy_adapter.py"


class NumpyBatchNorm:
    """The user's own layer: float32 BatchNorm over every axis but `axis`, PyTorch's momentum convention."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, axis: int = 1):
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.eps, self.momentum, self.axis = eps, momentum, axis
        self.weight = np.ones(num_features, np.float32)
        self.bias = np.zeros(num_features, np.float32)
        self.running_mean = np.zeros(num_features, np.float32)
        self.running_var = np.ones(num_features, np.float32)

    def __call__(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        x = np.asarray(x, np.float32)
        axis = self.axis % x.ndim
        axes = tuple(a for a in range(x.ndim) if a != axis)
        shape = [1] * x.ndim
        shape[axis] = -1
        if training:
            n = x.size // x.shape[axis]
            if n == 0:
                raise ValueError("BatchNorm needs at least one value per channel in training")
            mean = x.mean(axis=axes)
            var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)  # two-pass, biased
            unbiased = var * (n / (n - 1)) if n > 1 else var
            m = np.float32(self.momentum)
            self.running_mean = ((1 - m) * self.running_mean + m * mean).astype(np.float32)
            self.running_var = ((1 - m) * self.running_var + m * unbiased).astype(np.float32)
        else:
            mean, var = self.running_mean, self.running_var
        inv = (self.weight / np.sqrt(var + np.float32(self.eps))).reshape(shape)
        return ((x - mean.reshape(shape)) * inv + self.bias.reshape(shape)).astype(np.float32)


class MinimalNumpyBatchNorm(BatchNormAdapter):
    id = "numpy-minimal"

    @classmethod
    def declare(cls) -> Declaration:
        return Declaration(
            framework="NumPy (plain-NumPy example layer)",
            default_eps=Cited(1e-5, f"{_SRC}: NumpyBatchNorm.__init__(eps=1e-5)"),
            default_momentum=Cited(0.1, f"{_SRC}: NumpyBatchNorm.__init__(momentum=0.1)"),
            momentum_weights=Cited("new", f"{_SRC}: running = (1 - m) * running + m * batch"),
            default_channels_last=Cited(False, f"{_SRC}: NumpyBatchNorm.__init__(axis=1)"),
            running_var_estimator=Cited({"default": "unbiased"}, f"{_SRC}: unbiased = var * n / (n - 1)"),
            normalize_estimator=Cited("biased", f"{_SRC}: var = mean((x - mean)^2)"),
            single_value_batch=Cited("offset", f"{_SRC}: n == 1 gives var 0, so x - mean = 0 and y = bias"),
            cumulative_average=Cited(False, f"{_SRC}: momentum is a number, no cumulative average"),
            batch_stats_inference=Cited(None, f"{_SRC}: inference always uses the running statistics"),
            training_default=Cited("inference", f"{_SRC}: NumpyBatchNorm.__call__(training=False)"),
            variance_algorithm=Cited("two-pass", f"{_SRC}: mean first, then mean((x - mean)^2)"),
        )

    def __init__(self, spec):
        super().__init__(spec)
        if spec.dtype != "float32":
            raise Unsupported(f"{self.id}: computes in float32 only")
        if spec.momentum is None and not spec.use_defaults:
            raise Unsupported(f"{self.id}: no cumulative average (momentum=None)")
        if not spec.track_running_stats:
            raise Unsupported(f"{self.id}: always tracks running statistics")
        if spec.use_defaults:
            # The layer's own eps and momentum; the data arrives in the spec's layout, as for every adapter.
            self.layer = NumpyBatchNorm(spec.num_features, axis=spec.channel_axis)
        else:
            self.layer = NumpyBatchNorm(spec.num_features, eps=spec.eps, momentum=spec.momentum,
                                        axis=spec.channel_axis)

    def forward(self, x, training):
        y = self.layer(x) if training is None else self.layer(x, training=training)
        return np.asarray(y, np.float64)

    def get_state(self) -> State:
        L = self.layer
        f = lambda a: np.asarray(a, np.float64).copy()
        if self.spec.affine:
            return State(f(L.weight), f(L.bias), f(L.running_mean), f(L.running_var))
        return State(None, None, f(L.running_mean), f(L.running_var))

    def set_state(self, state: State) -> None:
        L = self.layer
        for name, value in (("weight", state.scale), ("bias", state.offset), ("running_mean", state.mean),
                            ("running_var", state.var)):
            if value is not None and (self.spec.affine or name.startswith("running")):
                setattr(L, name, np.asarray(value, np.float32).copy())
