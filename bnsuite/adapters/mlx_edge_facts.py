"""Declared behaviour of mlx.nn.BatchNorm on inputs that break BatchNorm (suites/test_edge_inputs.py), the "edge_facts"
capability of the mlx adapter. Values are the strings the suite observes (see bnsuite/adapters/edge_facts.py). MLX's
BatchNorm has no mask, no ghost batches and one channel axis, so only the empty-batch and eps facts apply.

Sources: the installed mlx 0.32.4, mlx/nn/layers/normalization.py (BatchNorm), confirmed by running it.
"""

from __future__ import annotations

from bnsuite.adapters.base import Cited

_BN = "mlx/nn/layers/normalization.py: BatchNorm"
_EPS = (f"{_BN}.__init__: 'if eps <= 0.0: raise ValueError(f\"[BatchNorm] 'eps' must be positive but got {{eps}}.\")' "
        "(at construction, in every mode)")

MLX = {
    "empty_batch_training": Cited(
        "empty output, running stats nan",
        f"{_BN}.__call__: the one-value guard multiplies x.shape[:-1] (0 for N = 0, so it passes), then _calc_stats "
        "takes mx.mean and mx.var over the empty axes (0/0 = NaN) and running_mean = (1 - mu) * running_mean + "
        "mu * mean has no guard"),
    "empty_batch_inference": Cited(
        "empty output, running stats unchanged",
        f"{_BN}.__call__: outside self.training mean, var = self.running_mean, self.running_var and nothing is "
        "assigned"),
    "eps_zero": Cited("error:ValueError", _EPS),
    "eps_negative": Cited("error:ValueError", _EPS),
}
