"""PyTorch multi-replica engine: torch.distributed (gloo on 127.0.0.1) with one process per replica.

The worker starts 4 processes with torch.multiprocessing (fork) into one gloo world; N=2 runs on a sub-group of ranks
0 and 1, N=4 on the whole world. Each idiom wraps torch.nn.BatchNorm1d (rank-2 (batch, C) shards) the way a user
does. Processes write their arrays to a temp dir; the parent stacks them per replica.
"""

from __future__ import annotations

import datetime
import os
import tempfile

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.adapters.replicas import (EPS, MOMENTUM, REPLICA_COUNTS, SHARD_CASES, STEPS, IdiomFacts,
                                       ReplicaDeclaration, ReplicaEngine, even_sizes, free_ports, merge_ranks,
                                       shards)

_BN = "torch/nn/modules/batchnorm.py"
_DDP = "torch/nn/parallel/distributed.py"

WORLD = max(REPLICA_COUNTS)
COLLECTIVE_TIMEOUT_S = 30


def _ddp(how: str, running_stats: str, source: str) -> Cited[IdiomFacts]:
    """DistributedDataParallel over a plain BatchNorm: each replica normalizes with its own shard and gets local
    gradients; the replica holding one sample raises as a lone BatchNorm does."""
    return Cited(IdiomFacts(how=how, normalizes="local", running_stats=running_stats, replicas_equal=False,
                            gradient="local", one_sample="error:ValueError", empty="ok"), source)


def _refused(how: str, why: str, source: str) -> Cited[IdiomFacts]:
    """A SyncBatchNorm idiom that raises ValueError on CPU tensors, whatever the shards: nothing else to measure."""
    return Cited(IdiomFacts(how=how, normalizes="error:ValueError", running_stats=f"n/a: {why}", replicas_equal=True,
                            gradient=f"n/a: {why}", uneven="error:ValueError", one_sample="error:ValueError",
                            empty="error:ValueError"), source)


DECLARATION = ReplicaDeclaration(
    framework="torch",
    default=Cited("local", f"{_BN}: BatchNorm computes its statistics over its input only; {_DDP}: "
                           "DistributedDataParallel splits the batch and synchronizes gradients, not activations"),
    idioms={
        "ddp_broadcast_buffers": _ddp(
            "DistributedDataParallel(bn) (broadcast_buffers defaults to True)", "broadcast0",
            f"{_DDP}: DistributedDataParallel.forward -> _pre_forward -> _check_sync_bufs_pre_fwd -> _sync_buffers "
            "broadcasts rank 0's buffers (authoritative_rank = 0) BEFORE the forward, which then updates each "
            "replica's copy with its own shard: replicas differ after every step until the next forward"),
        "ddp_broadcast_buffers_false": _ddp(
            "DistributedDataParallel(bn, broadcast_buffers=False)", "local",
            f"{_DDP}: __init__ sets forward_sync_buffers = init_sync_buffers = broadcast_buffers, so buffers are "
            "never synchronized (not even at construction): each replica keeps the running statistics of its own "
            "shards"),
        "ddp_forward_sync_buffers_false": _ddp(
            "DistributedDataParallel(bn, forward_sync_buffers=False)", "local",
            f"{_DDP}: __init__ docstring, forward_sync_buffers replaces the deprecated broadcast_buffers and syncs "
            "buffers at construction only"),
        "sync_batchnorm": _refused(
            "DistributedDataParallel(SyncBatchNorm.convert_sync_batchnorm(bn)) on CPU tensors", "DDP refuses the layer",
            f"{_DDP}: DistributedDataParallel.__init__ -> _passing_sync_batchnorm_handle raises "
            "ValueError('SyncBatchNorm layers only work with GPU modules') when device_type is cpu"),
        "sync_batchnorm_without_ddp": _refused(
            "SyncBatchNorm.convert_sync_batchnorm(bn) called directly on CPU tensors", "the forward raises",
            f"{_BN}: SyncBatchNorm.forward raises ValueError('SyncBatchNorm expected input tensor to be on GPU or "
            "XPU or ...') when need_sync (training, process group initialized) and input.device.type is not "
            "cuda/hpu/xpu/privateuse1"),
        "sync_batchnorm_gpu": Cited(
            IdiomFacts(how="DistributedDataParallel(SyncBatchNorm.convert_sync_batchnorm(bn)), nccl, one GPU per "
                           "replica", normalizes="global", running_stats="global", replicas_equal=True,
                       gradient="global", device="gpu"),
            f"{_BN}: SyncBatchNorm.forward -> sync_batch_norm.apply (torch/nn/modules/_functions.py: "
            "SyncBatchNorm.forward all-gathers mean, invstd and count; running_var uses the unbiased global "
            "variance var * count / (count - 1); backward all-reduces sum_dy and sum_dy_xmu)"),
    },
)


def _outcome(e: BaseException | None) -> str:
    return "ok" if e is None else f"error:{type(e).__name__}"


class TorchReplicas(ReplicaEngine):
    timeout_s = 180.0
    worker_env = {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}

    @classmethod
    def declare(cls) -> ReplicaDeclaration:
        return DECLARATION

    def measure(self, p):
        import torch
        import torch._dynamo  # noqa: F401  DDP imports it at construction: once here, not in each forked rank
        import torch.multiprocessing as mp

        out: dict[str, np.ndarray] = {}
        idioms = dict(self.declare().idioms)
        gpus = torch.cuda.device_count()
        for name, facts in idioms.items():
            if facts.value.device == "gpu" and gpus < WORLD:
                out[f"{name}/skipped"] = np.array(
                    f"needs {WORLD} CUDA devices for nccl (one per replica); torch sees {gpus}")
        with tempfile.TemporaryDirectory(prefix="bnsuite-torch-ddp-") as tmp:
            port = free_ports(1)[0]
            mp.start_processes(_rank_main, args=(type(self), WORLD, port, tmp, p, idioms), nprocs=WORLD, join=True,
                               start_method="fork")
            per_rank = []
            for r in range(WORLD):
                with np.load(os.path.join(tmp, f"rank{r}.npz")) as z:
                    per_rank.append({k: z[k] for k in z.files})
        return {**out, **merge_ranks(per_rank)}

    @classmethod
    def build(cls, torch, idiom: str, p, group, device):
        """(the module the replica calls, the BatchNorm layer whose buffers are read) for one idiom."""
        return _build(torch, idiom, p, group, device)


def _build(torch, idiom: str, p, group, device):
    bn = torch.nn.BatchNorm1d(p["scale"].size, eps=EPS, momentum=MOMENTUM).to(device)
    with torch.no_grad():
        for name, key in (("weight", "scale"), ("bias", "offset"), ("running_mean", "mean"), ("running_var", "var")):
            getattr(bn, name).copy_(torch.as_tensor(p[key], dtype=torch.float32))
    DDP = torch.nn.parallel.DistributedDataParallel
    if idiom == "ddp_broadcast_buffers":
        return DDP(bn, process_group=group), bn
    if idiom == "ddp_broadcast_buffers_false":
        return DDP(bn, process_group=group, broadcast_buffers=False), bn
    if idiom == "ddp_forward_sync_buffers_false":
        return DDP(bn, process_group=group, forward_sync_buffers=False), bn
    if idiom in ("sync_batchnorm", "sync_batchnorm_gpu"):
        sbn = torch.nn.SyncBatchNorm.convert_sync_batchnorm(bn, process_group=group)
        try:
            return DDP(sbn, process_group=group, device_ids=[device.index] if device.type == "cuda" else None), sbn
        except Exception as e:  # DDP refuses SyncBatchNorm on CPU at construction: keep the layer to show its state
            return e, sbn
    if idiom == "sync_batchnorm_without_ddp":
        sbn = torch.nn.SyncBatchNorm.convert_sync_batchnorm(bn, process_group=group)
        return sbn, sbn
    raise ValueError(f"unknown idiom {idiom!r}")


def _rank_main(rank: int, engine, world: int, port: int, tmp: str, p, idioms) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    gpu_ok = torch.cuda.device_count() >= world
    backend = "nccl" if gpu_ok else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    groups = {n: (dist.new_group(list(range(n))) if n < world else dist.group.WORLD) for n in REPLICA_COUNTS}
    res: dict[str, np.ndarray] = {}
    f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)
    npy = lambda t: t.detach().to("cpu", torch.float64).numpy()
    for idiom, facts in idioms.items():
        on_gpu = facts.value.device == "gpu"
        if on_gpu and not gpu_ok:
            continue
        device = torch.device("cuda", rank) if on_gpu else torch.device("cpu")
        for n in REPLICA_COUNTS:
            if rank >= n:
                continue
            key = f"{idiom}/N{n}"
            model, bn = engine.build(torch, idiom, p, groups[n], device)
            error = None
            try:
                if isinstance(model, Exception):
                    raise model
                for step in range(max(STEPS)):
                    x = f32(shards(p["xs"][step], even_sizes(n))[rank]).to(device).requires_grad_(True)
                    dy = f32(shards(p["dy"], even_sizes(n))[rank]).to(device)
                    y = model(x)
                    (y * dy).sum().backward()
                    if step == 0:
                        res[f"{key}/y"], res[f"{key}/dx"] = npy(y), npy(x.grad)
                    if step + 1 in STEPS:
                        res[f"{key}/mean_k{step + 1}"] = npy(bn.running_mean)
                        res[f"{key}/var_k{step + 1}"] = npy(bn.running_var)
            except Exception as e:  # the declared refusal (SyncBatchNorm on CPU) is a measurement
                error = e
            res[f"{key}/outcome"] = np.array(_outcome(error))
        # Shard cases: one training forward on N=2 replicas, without grad (no reducer left waiting for a backward
        # on the replica whose forward raised).
        for case, sizes in SHARD_CASES.items():
            if rank >= len(sizes):
                continue
            key = f"{idiom}/{case}"
            model, bn = engine.build(torch, idiom, p, groups[len(sizes)], device)
            error = None
            try:
                if isinstance(model, Exception):
                    raise model
                with torch.no_grad():
                    y = model(f32(shards(p["xs"][0], sizes)[rank]).to(device))
                res[f"{key}/y{rank}"] = npy(y)
            except Exception as e:
                error = e
            res[f"{key}/outcome"] = np.array(_outcome(error))
            res[f"{key}/mean"], res[f"{key}/var"] = npy(bn.running_mean), npy(bn.running_var)
        dist.barrier()
    np.savez(os.path.join(tmp, f"rank{rank}.npz"), **res)
    dist.barrier()
    dist.destroy_process_group()
