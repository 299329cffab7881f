"""Multi-replica BatchNorm (suites/test_replicas.py): broken engines run the real torch.distributed machinery (gloo,
DDP); each differs from its declaration in one way. Each broken adapter is the torch BatchNorm with such an engine."""

from __future__ import annotations

import dataclasses

from bnsuite.adapters.base import Cited
from bnsuite.adapters.replicas import IdiomFacts, ReplicaDeclaration
from bnsuite.adapters.replicas.torch_ddp import DECLARATION as TORCH_REPLICAS, TorchReplicas
from meta_tests.broken.base import torch_with


class ClaimsGlobalStatsEngine(TorchReplicas):
    """Declares that DDP with broadcast_buffers=False normalizes with global statistics and keeps equal global
    running statistics, and that SyncBatchNorm runs on CPU; the real engine computes local ones / refuses."""

    @classmethod
    def declare(cls):
        local = TORCH_REPLICAS.idioms["ddp_broadcast_buffers_false"]
        sync = TORCH_REPLICAS.idioms["sync_batchnorm_without_ddp"]
        return ReplicaDeclaration(TORCH_REPLICAS.framework, TORCH_REPLICAS.default, {
            "ddp_broadcast_buffers_false": Cited(dataclasses.replace(
                local.value, normalizes="global", running_stats="global", replicas_equal=True, gradient="global",
                one_sample="ok"), "broken: claims synchronized statistics"),
            "sync_batchnorm_without_ddp": Cited(dataclasses.replace(sync.value, normalizes="global"),
                                                "broken: claims SyncBatchNorm runs on CPU"),
        })


class DriftingRunningStatsEngine(TorchReplicas):
    """A hand-rolled CPU SyncBatchNorm: normalizes with global statistics (two all-reduces, differentiable) but
    updates each replica's running statistics from its own shard, while declaring them global and equal."""

    @classmethod
    def declare(cls):
        facts = IdiomFacts(how="hand-rolled SyncBatchNorm under DistributedDataParallel(broadcast_buffers=False)",
                           normalizes="global", running_stats="global", replicas_equal=True, gradient="global")
        return ReplicaDeclaration("torch", TORCH_REPLICAS.default,
                                  {"hand_rolled_sync": Cited(facts, "broken: running statistics not reduced")})

    @classmethod
    def build(cls, torch, idiom, p, group, device):
        from torch.distributed.nn.functional import all_reduce

        class HandRolledSync(torch.nn.BatchNorm1d):
            def forward(self, x):
                count = all_reduce(torch.tensor([float(x.shape[0])]), group=group)
                mean = all_reduce(x.sum(0), group=group) / count
                var = all_reduce(((x - mean) ** 2).sum(0), group=group) / count
                with torch.no_grad():  # the breakage: local statistics feed the running ones
                    if x.shape[0] > 1:
                        m = self.momentum
                        self.running_mean.mul_(1 - m).add_(m * x.mean(0))
                        self.running_var.mul_(1 - m).add_(m * x.var(0, unbiased=True))
                return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias

        bn = HandRolledSync(p["scale"].size, eps=1e-3, momentum=0.1)
        with torch.no_grad():
            for name, key in (("weight", "scale"), ("bias", "offset"), ("running_mean", "mean"),
                              ("running_var", "var")):
                getattr(bn, name).copy_(torch.as_tensor(p[key], dtype=torch.float32))
        return torch.nn.parallel.DistributedDataParallel(bn, process_group=group, broadcast_buffers=False), bn


class HungCollectiveEngine(TorchReplicas):
    """Replica 1 never joins the all-reduce replica 0 waits in: the worker must be killed at its timeout."""

    timeout_s = 6.0

    @classmethod
    def declare(cls):
        return ReplicaDeclaration("torch", TORCH_REPLICAS.default,
                                  {"ddp_broadcast_buffers": TORCH_REPLICAS.idioms["ddp_broadcast_buffers"]})

    def measure(self, p):
        import torch.multiprocessing as mp

        from bnsuite.adapters.replicas import free_ports

        mp.start_processes(_hang_rank, args=(free_ports(1)[0],), nprocs=2, join=True, start_method="fork")
        return {}


def _hang_rank(rank, port):
    import datetime
    import time

    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=600))
    if rank == 0:
        dist.all_reduce(torch.ones(3))
    else:
        time.sleep(600)


ReplicasClaimGlobal = torch_with("ReplicasClaimGlobal", "broken-replicas-claim-global",
                                 replicas=ClaimsGlobalStatsEngine)
ReplicasRunningStatsDrift = torch_with("ReplicasRunningStatsDrift", "broken-replicas-running-stats-drift",
                                       replicas=DriftingRunningStatsEngine)
ReplicasHungCollective = torch_with("ReplicasHungCollective", "broken-replicas-hung-collective",
                                    replicas=HungCollectiveEngine)

EXPECTED_FAILURES = {
    ReplicasClaimGlobal: {"replica_normalizes_with", "replica_forward", "replica_gradient_rule", "replica_dx",
                          "replica_running_stats_equal", "replica_running_mean", "replica_running_var",
                          "replica_running_stats_rule", "replica_outcome", "replica_shard_outcome",
                          "replica_shard_forward"},
    ReplicasRunningStatsDrift: {"replica_running_stats_equal", "replica_running_mean", "replica_running_var",
                                "replica_running_stats_rule"},
    ReplicasHungCollective: {"replica_worker_finished"},
}
