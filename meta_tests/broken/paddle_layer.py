"""Broken PaddlePaddle BatchNorm layers: the real paddle adapter with ONE conversion or declared value wrong. They run
where paddle is installed (the lock installs it) and skip, saying so, where it is not."""

from __future__ import annotations

import dataclasses

from bnsuite.adapters.base import Cited
from bnsuite.adapters.paddle_bn import PaddleBatchNorm
from bnsuite.adapters.replicas.paddle_dp import DECLARATION as PADDLE_REPLICAS, PaddleReplicas
from meta_tests.broken.base import MomentumUnconverted, ref, wrong


class PaddleMomentumUnconverted(MomentumUnconverted, PaddleBatchNorm):
    """Passes the canonical momentum (weight of the NEW statistic) to paddle unchanged, although paddle's momentum
    weights the OLD running value: the classic torch-to-paddle porting slip."""

    id = "broken-paddle-momentum-unconverted"


class PaddleSingleValueOffset(PaddleBatchNorm):
    """Declares what paddle's documented formula gives for one value per channel (the offset), not what its kernel
    does (the input unchanged)."""

    id = "broken-paddle-single-value-offset"

    @classmethod
    def declare(cls):
        return dataclasses.replace(super().declare(), single_value_batch=wrong("offset"))


class WrongRefusalMessageEngine(PaddleReplicas):
    """Declares SyncBatchNorm's CPU refusal with torch's message, not the one paddle raises (its only idiom)."""

    @classmethod
    def declare(cls):
        sync = PADDLE_REPLICAS.idioms["sync_batchnorm"].value
        return dataclasses.replace(PADDLE_REPLICAS, idioms={"sync_batchnorm": Cited(dataclasses.replace(
            sync, error="SyncBatchNorm layers only work with GPU modules"), "deliberately wrong")})


class PaddleReplicasWrongMessage(PaddleBatchNorm):
    """The real paddle adapter whose replica engine declares the wrong refusal message."""

    id = "broken-paddle-replicas-wrong-message"
    capabilities = {**PaddleBatchNorm.capabilities, "replicas": ref(WrongRefusalMessageEngine)}


EXPECTED_FAILURES = {
    PaddleMomentumUnconverted: {"running_mean", "running_var", "running_var_estimator", "port_momentum_conversion",
                                "port_running_mean", "port_running_var"},
    PaddleSingleValueOffset: {"single_value_batch", "batch_stats_inference_single_sample", "replica_shard_single_value",
                              "replica_shard_forward"},
    PaddleReplicasWrongMessage: {"replica_error_message"},
}
