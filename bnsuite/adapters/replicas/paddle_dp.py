"""PaddlePaddle multi-replica engine: paddle.distributed over gloo on 127.0.0.1, one process per replica.

The worker calls ``paddle.distributed.spawn(backend="gloo", start_method="fork")`` for a world of 2 processes (the
CPU-only launch: paddle/distributed/utils/launch_utils.py: _prepare_trainer_env gives each process PADDLE_TRAINER_ID,
PADDLE_TRAINER_ENDPOINTS, ... and PADDLE_DISTRI_BACKEND=gloo, and paddle/distributed/parallel.py: init_parallel_env
then builds a GLOOParallelContext). Each idiom wraps paddle.nn.BatchNorm1D (rank-2 (batch, C) shards) the way a user does. Processes write their
arrays to a temp dir; the worker stacks them per replica.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.adapters.replicas import (EPS, MOMENTUM, SHARD_CASES, STEPS, IdiomFacts, ReplicaDeclaration,
                                       ReplicaEngine, even_sizes, merge_ranks, shards)

_NORM = "paddle/nn/layer/norm.py"
_DP = "paddle/distributed/parallel.py"
_SPAWN = "paddle/distributed/spawn.py"

WORLD = 2
# The error the CPU build raises at SyncBatchNorm's first forward (observed paddlepaddle 3.3.1, CPU wheel).
SYNC_BN_CPU_ERROR = "(NotFound) The kernel `sync_batch_norm` is not registered."
_SYNC_WHY = "SyncBatchNorm has no CPU kernel"

DECLARATION = ReplicaDeclaration(
    framework="paddle",
    default=Cited("local", f"{_NORM}: _BatchNormBase.forward calls F.batch_norm on its input only; {_DP}: "
                           "DataParallel.forward calls the wrapped layer and prepares the gradient all-reduce "
                           "(reducer), nothing synchronizes activations"),
    idioms={
        "data_parallel": Cited(
            IdiomFacts(how="paddle.DataParallel(bn) after paddle.distributed.init_parallel_env() (gloo)",
                       normalizes="local", running_stats="local", replicas_equal=False, gradient="local",
                       uneven="ok", one_sample="ok", empty="ok", replica_counts=(WORLD,)),
            f"{_DP}: DataParallel.__init__ -> sync_params_buffers(self._layers) broadcasts rank 0's parameters AND "
            "buffers once, at construction; DataParallel.forward only runs self._layers(...) and "
            "_reducer.prepare_for_backward (parameter gradients are all-reduced, the input gradient is not), so "
            f"each replica normalizes with, and updates its running statistics from, its own shard; {_SPAWN}: "
            "_get_subprocess_env_list, backend 'gloo' -> CPUONLY mode; a replica with one sample behaves as a "
            "lone layer on one value (paddle/phi/kernels/cpu/batch_norm_kernel.cc: BatchNormKernel, "
            "(N * sample_size) == 1 -> y = x, the running statistics untouched) and a replica with an empty shard as "
            "a lone layer on an empty batch (an empty output, its running statistics unchanged: edge_facts.PADDLE "
            "empty_batch_training)"),
        "sync_batchnorm": Cited(
            IdiomFacts(how="paddle.DataParallel(paddle.nn.SyncBatchNorm.convert_sync_batchnorm(bn)) on the CPU (gloo)",
                       normalizes="error:RuntimeError", running_stats=f"n/a: {_SYNC_WHY}", replicas_equal=True,
                       gradient=f"n/a: {_SYNC_WHY}", uneven="error:RuntimeError", one_sample="error:RuntimeError",
                       empty="error:RuntimeError", replica_counts=(WORLD,), error=SYNC_BN_CPU_ERROR),
            f"{_NORM}: SyncBatchNorm.forward -> _C_ops.sync_batch_norm_, a kernel the CPU build does not register: "
            f"RuntimeError '{SYNC_BN_CPU_ERROR}' (paddle/phi/core/kernel_factory.cc) at the first forward; "
            "convert_sync_batchnorm and DataParallel construction succeed"),
        "sync_batchnorm_eval": Cited(
            IdiomFacts(how="paddle.DataParallel(paddle.nn.SyncBatchNorm.convert_sync_batchnorm(bn)) after .eval(), on "
                           "the CPU (inference with the moving statistics, nothing to synchronize)",
                       normalizes="error:RuntimeError", running_stats=f"n/a: {_SYNC_WHY}", replicas_equal=True,
                       gradient=f"n/a: {_SYNC_WHY}", uneven="error:RuntimeError", one_sample="error:RuntimeError",
                       empty="error:RuntimeError", replica_counts=(WORLD,), error=SYNC_BN_CPU_ERROR),
            f"{_NORM}: SyncBatchNorm.forward calls _C_ops.sync_batch_norm_ in every mode (is_test = not "
            "self.training), so eval() meets the same missing CPU kernel although its docstring gives the moving "
            "statistics for evaluation mode"),
    },
)


class PaddleReplicas(ReplicaEngine):
    worker_env = {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    timeout_s = 120.0  # a run takes about 3 s; the rest is room for a loaded machine

    @classmethod
    def declare(cls) -> ReplicaDeclaration:
        return DECLARATION

    def measure(self, p):
        import paddle.distributed as dist

        idioms = dict(self.declare().idioms)
        with tempfile.TemporaryDirectory(prefix="bnsuite-paddle-dp-") as tmp:
            # fork: the processes inherit the imported paddle (spawn would import it again in each, ~5 s).
            dist.spawn(_rank_main, args=(tmp, p, idioms), nprocs=WORLD, backend="gloo", start_method="fork",
                       join=True)
            per_rank = []
            for r in range(WORLD):
                with np.load(os.path.join(tmp, f"rank{r}.npz")) as z:
                    per_rank.append({k: z[k] for k in z.files})
        return merge_ranks(per_rank)


def _build(paddle, idiom: str, p):
    """(the module the replica calls, the BatchNorm layer whose buffers are read) for one idiom; the module is the
    exception where building it raised."""
    # paddle's momentum weights the old value: 1 - the canonical momentum.
    bn = paddle.nn.BatchNorm1D(p["scale"].size, epsilon=EPS, momentum=1.0 - MOMENTUM)
    for param, key in ((bn.weight, "scale"), (bn.bias, "offset"), (bn._mean, "mean"), (bn._variance, "var")):
        param.set_value(np.asarray(p[key], np.float32))
    if idiom in ("sync_batchnorm", "sync_batchnorm_eval"):
        bn = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(bn)
    elif idiom != "data_parallel":
        raise ValueError(f"unknown idiom {idiom!r}")
    try:
        model = paddle.DataParallel(bn)
    except Exception as e:
        return e, bn
    if idiom.endswith("_eval"):
        model.eval()
    return model, bn


def _attempt(step) -> tuple[str, str]:
    """Run `step`: ("ok", "") or ("error:<ExceptionClass>", the first line of its message); a declared refusal is a
    measurement."""
    try:
        step()
    except Exception as e:
        return f"error:{type(e).__name__}", (str(e).strip().splitlines() or [""])[0]
    return "ok", ""


def _rank_main(tmp: str, p, idioms) -> None:
    import paddle
    import paddle.distributed as dist

    dist.init_parallel_env()
    rank, n = dist.get_rank(), WORLD
    res: dict[str, np.ndarray] = {}
    f32 = lambda a: paddle.to_tensor(np.ascontiguousarray(a, np.float32))
    npy = lambda t: np.asarray(t.astype("float64").numpy(), np.float64)

    def train(model, bn, key: str) -> None:
        """K training steps with a backward (DataParallel all-reduces the parameter gradients) on this rank's shard."""
        if isinstance(model, Exception):
            raise model
        for step in range(max(STEPS)):
            x = f32(shards(p["xs"][step], even_sizes(n))[rank])
            x.stop_gradient = False
            y = model(x)
            (y * f32(shards(p["dy"], even_sizes(n))[rank])).sum().backward()
            if step == 0:
                res[f"{key}/y"], res[f"{key}/dx"] = npy(y), npy(x.grad)
            if step + 1 in STEPS:
                res[f"{key}/mean_k{step + 1}"], res[f"{key}/var_k{step + 1}"] = npy(bn._mean), npy(bn._variance)

    def forward_once(model, key: str, sizes) -> None:
        """One forward without grad (no reducer left waiting for a backward on a replica whose forward raised)."""
        if isinstance(model, Exception):
            raise model
        with paddle.no_grad():
            res[f"{key}/y{rank}"] = npy(model(f32(shards(p["xs"][0], sizes)[rank])))

    for idiom in idioms:
        key = f"{idiom}/N{n}"
        model, bn = _build(paddle, idiom, p)
        outcome, message = _attempt(lambda: train(model, bn, key))
        res[f"{key}/outcome"], res[f"{key}/error"] = np.array(outcome), np.array(message)
        for case, sizes in SHARD_CASES.items():
            case_key = f"{idiom}/{case}"
            model, bn = _build(paddle, idiom, p)
            res[f"{case_key}/outcome"] = np.array(_attempt(lambda: forward_once(model, case_key, sizes))[0])
            res[f"{case_key}/mean"], res[f"{case_key}/var"] = npy(bn._mean), npy(bn._variance)
        dist.barrier()
    np.savez(os.path.join(tmp, f"rank{rank}.npz"), **res)
    dist.barrier()
