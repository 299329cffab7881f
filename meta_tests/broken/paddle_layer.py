"""Broken PaddlePaddle BatchNorm layers: the real paddle adapter with ONE conversion or declared value wrong. They run
where paddle is installed (the lock installs it) and skip, saying so, where it is not."""

from __future__ import annotations

import dataclasses

from bnsuite.adapters.paddle_bn import PaddleBatchNorm
from meta_tests.broken.base import wrong


class PaddleMomentumUnconverted(PaddleBatchNorm):
    """Passes the canonical momentum (weight of the NEW statistic) to paddle unchanged, although paddle's momentum
    weights the OLD running value: the classic torch-to-paddle porting slip."""

    id = "broken-paddle-momentum-unconverted"

    def __init__(self, spec):
        super().__init__(spec)
        if not spec.use_defaults and spec.momentum is not None:
            self.kwargs["momentum"] = spec.momentum
            self.bn = self._build()


class PaddleSingleValueOffset(PaddleBatchNorm):
    """Declares what paddle's documented formula gives for one value per channel (the offset), not what its kernel
    does (the input unchanged)."""

    id = "broken-paddle-single-value-offset"

    @classmethod
    def declare(cls):
        return dataclasses.replace(super().declare(), single_value_batch=wrong("offset"))


EXPECTED_FAILURES = {
    PaddleMomentumUnconverted: {"running_mean", "running_var", "running_var_estimator", "port_momentum_conversion",
                                "port_running_mean", "port_running_var"},
    PaddleSingleValueOffset: {"single_value_batch", "batch_stats_inference_single_sample"},
}
