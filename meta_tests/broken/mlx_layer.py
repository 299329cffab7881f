"""Broken MLX BatchNorm layers: the real mlx adapter with ONE conversion or declared value wrong. They run where mlx
is installed (the lock installs it) and skip, saying so, where it is not."""

from __future__ import annotations

import dataclasses

from bnsuite.adapters.base import FreezeFacts
from bnsuite.adapters.blocks.mlx_blocks import DECLARATION as MLX_BLOCKS, MlxBlocks
from bnsuite.adapters.mlx_bn import MlxBatchNorm
from bnsuite.adapters.mlx_edge_facts import MLX as MLX_EDGE_FACTS
from bnsuite.adapters.norms.mlx_norms import MlxNorms
from bnsuite.adapters.replicas.mlx_dist import DECLARATION as MLX_REPLICAS, MlxReplicas
from meta_tests.broken.base import probe_declared, ref, wrong


class MlxMomentumAsOld(MlxBatchNorm):
    """Converts the canonical momentum as for Keras (1 - momentum), although MLX's momentum weights the NEW batch
    statistic as torch's does: the slip of a port that takes MLX for a Keras-like framework."""

    id = "broken-mlx-momentum-as-old"

    def __init__(self, spec):
        super().__init__(spec)
        if not spec.use_defaults and spec.momentum is not None:
            self.kwargs["momentum"] = 1.0 - spec.momentum
            self.module = self.nn.BatchNorm(spec.num_features, **self.kwargs)
            if spec.dtype != "float32":
                self.module.set_dtype(self.dt)


class MlxFreezeStopsStats(MlxBatchNorm):
    """Declares what `freeze()` suggests (the running statistics stay), not what MLX does (they move in training
    mode)."""

    id = "broken-mlx-freeze-stops-stats"

    @classmethod
    def declare(cls):
        decl = super().declare()
        return dataclasses.replace(decl, freeze={**decl.freeze, "freeze": wrong(FreezeFacts("batch", False, False))})


class MlxFloat64NdarrayKept(MlxBatchNorm):
    """Declares that mx.array keeps a float64 ndarray float64, as NumPy and torch do."""

    id = "broken-mlx-float64-ndarray-kept"

    probes = probe_declared(MlxBatchNorm, "mlx_array_float64_ndarray_dtype", "float64")


class MlxEmptyAxisReductionReturns(MlxBatchNorm):
    """Declares that a reduction over an empty axis returns (zeros), as NumPy's does, where MLX's hangs now and then."""

    id = "broken-mlx-empty-axis-reduction-returns"

    probes = probe_declared(MlxBatchNorm, "mlx_empty_axis_reduction", "returns")


class MlxNormsGroupsContiguous(MlxNorms):
    """Declares torch's consecutive GroupNorm groups, not MLX's default strided ones."""

    @classmethod
    def declare(cls):
        return dataclasses.replace(super().declare(), group_layout=wrong("contiguous"))


class MlxGroupNormContiguous(MlxBatchNorm):
    id = "broken-mlx-groupnorm-contiguous"
    capabilities = {**MlxBatchNorm.capabilities, "norms": ref(MlxNormsGroupsContiguous)}


class MlxBceZeroGradientBlocks(MlxBlocks):
    """Declares torch's zero gradient for every loss on a one-unit softmax, where MLX's probability loss gives NaN."""

    declaration = dataclasses.replace(MLX_BLOCKS, one_unit_softmax_bce=wrong("zero"))


class MlxBceNanDeclaredZero(MlxBatchNorm):
    id = "broken-mlx-bce-nan-declared-zero"
    capabilities = {**MlxBatchNorm.capabilities, "blocks": ref(MlxBceZeroGradientBlocks)}


# The mlx table with torch's guard on an empty training batch (the statistics stay), which MLX lacks.
EMPTY_BATCH_UNCHANGED = {**MLX_EDGE_FACTS, "empty_batch_training": wrong("empty output, running stats unchanged")}


class MlxEmptyBatchDeclaredUnchanged(MlxBatchNorm):
    id = "broken-mlx-empty-batch-declared-unchanged"
    capabilities = {**MlxBatchNorm.capabilities,
                    "edge_facts": f"{__name__}:EMPTY_BATCH_UNCHANGED"}


class SynchronizedDeclaredLocalEngine(MlxReplicas):
    """Declares the plain data-parallel step's per-rank statistics (average_gradients, its only idiom) while its layer
    is the all_sum-synchronized one: the real ring backend, statistics synchronized where declared per-replica."""

    @classmethod
    def declare(cls):
        return dataclasses.replace(MLX_REPLICAS, idioms={"average_gradients": MLX_REPLICAS.idioms["average_gradients"]})

    @classmethod
    def build(cls, idiom, p, group):
        return super().build("all_sum_sync_batchnorm", p, group)


class MlxReplicasStatsSynchronized(MlxBatchNorm):
    id = "broken-mlx-replicas-stats-synchronized"
    capabilities = {**MlxBatchNorm.capabilities, "replicas": ref(SynchronizedDeclaredLocalEngine)}


EXPECTED_FAILURES = {
    MlxMomentumAsOld: {"running_mean", "running_var_estimator", "port_momentum_conversion"},
    MlxFreezeStopsStats: {"freeze_running_stats_update"},
    MlxFloat64NdarrayKept: {"mlx_array_float64_ndarray_dtype"},
    MlxEmptyAxisReductionReturns: {"mlx_empty_axis_reduction"},
    MlxGroupNormContiguous: {"group_norm_channel_layout"},
    MlxBceNanDeclaredZero: {"softmax_one_unit_bce_gradient"},
    MlxEmptyBatchDeclaredUnchanged: {"empty_batch_training"},
    MlxReplicasStatsSynchronized: {"replica_normalizes_with", "replica_forward", "replica_gradient_rule", "replica_dx",
                                   "replica_running_stats_equal", "replica_running_mean", "replica_running_var",
                                   "replica_running_stats_rule", "replica_shard_outcome", "replica_shard_forward"},
}
SEES = {MlxFloat64NdarrayKept: {"test_framework_traps.py"}, MlxEmptyAxisReductionReturns: {"test_framework_traps.py"}}
