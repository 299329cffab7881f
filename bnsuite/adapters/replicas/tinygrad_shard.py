"""tinygrad multi-replica engine: one logical tensor sharded over N CPU devices ("CPU:0" .. "CPU:3") with
``Tensor.shard(devices, axis=0)``, tinygrad.nn.BatchNorm applied to it inside Context(TRAINING=1).

tinygrad has no process group: the devices live in one process and the scheduler lowers a reduction over the sharded
axis to an all-reduce (tinygrad/schedule/multi.py: reduce_multi). The worker still runs it in its own process, as
every engine does (its kernels compile with clang, and a hang costs the worker only). Importing the adapter module
sets tinygrad's kernel cache and in-process compilation before tinygrad is imported.
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.adapters.replicas import (EPS, MOMENTUM, REPLICA_COUNTS, STEPS, IdiomFacts, ReplicaDeclaration,
                                       ReplicaEngine, even_sizes, shards)
from bnsuite.adapters.tinygrad_bn import realize_step, training_mode

_BN = "tinygrad/nn/__init__.py: BatchNorm"
_SHARD = "tinygrad/tensor.py: Tensor.shard -> tinygrad/uop/ops.py: UOp.shard / UOp._shard"
_REDUCE = ("tinygrad/schedule/multi.py: reduce_multi ('all sharded axes are reduced: full allreduce': "
           "local._rop(...).allreduce(op, multi.device))")
_GLOBAL = (f"{_BN}.calc_stats: x.mean(axis=(0, 2, ...)) and (y*y).mean reduce over the sharded batch axis, which "
           f"{_REDUCE} lowers to a per-device reduction plus an all-reduce, so every device normalizes with the "
           "statistics of the whole logical batch (observed equal to the global oracle)")
_EVEN = ("n/a: Tensor.shard splits the axis into equal parts only: tinygrad/uop/ops.py: UOp._shard raises "
         "RuntimeError 'multi axis uneven' where the axis does not divide by the device count")
DEVICE = "CPU"  # tinygrad's CPU backend; "CPU:0" names the same device as "CPU" (tinygrad/device.py: canonicalize)
_UNSHARDED_WHY = "the forward raises"
HOW = ("for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.num_batches_tracked): t.shard_(devices); "
       "bn(Tensor(x).shard(devices, axis=0)) inside Context(TRAINING=1), devices = ('CPU:0', ..., 'CPU:N-1')")

DECLARATION = ReplicaDeclaration(
    framework="tinygrad",
    default=Cited("global", f"{_SHARD}: a sharded tensor is one logical tensor; {_GLOBAL}"),
    idioms={
        "shard_batch": Cited(
            IdiomFacts(how=HOW, normalizes="global", running_stats="global", replicas_equal=True, gradient="global",
                       uneven=_EVEN, one_sample=_EVEN, empty=_EVEN),
            f"{_GLOBAL}; {_BN}.__call__: running_mean/running_var.assign((1-momentum) * old + momentum * batch "
            "statistic) with the Bessel factor x.numel()/(x.numel()-x.shape[1]) of the logical (global) shape, into "
            "state replicated on every device (Tensor.shard_ with axis=None copies it to each), so every replica "
            "holds the same global running statistics; the backward of the all-reduced mean and variance carries "
            "the cross-replica terms (tinygrad/gradient.py), the gradient is the global one; upstream: tinygrad PR "
            "#3472 wrote an UnsyncedBatchNorm for examples/hlb_cifar10.py to get per-device statistics, which "
            "nn.BatchNorm on a sharded batch does not give"),
        "shard_batch_state_unsharded": Cited(
            IdiomFacts(how="bn.weight and bn.bias sharded, running_mean/running_var left on the default device; "
                           "bn(Tensor(x).shard(devices, axis=0)) inside Context(TRAINING=1)",
                       normalizes="error:RuntimeError", running_stats=f"n/a: {_UNSHARDED_WHY}", replicas_equal=True,
                       gradient=f"n/a: {_UNSHARDED_WHY}", uneven=_EVEN, one_sample=_EVEN, empty=_EVEN),
            f"{_BN}.__call__ assigns the all-reduced batch statistics (on the device tuple) into running statistics "
            "on one device; tinygrad/schedule/__init__.py: assert_all_same_devices raises RuntimeError 'all buffers "
            "must be on the same device: [...]' when the step is realized"),
    },
)


class TinygradReplicas(ReplicaEngine):
    # DEV=CPU: the idioms are declared on CPU devices; it also spares tinygrad probing every backend it knows
    # (importing each runtime) to pick a default device (tinygrad/device.py: _Device._select_device).
    worker_env = {"DEV": DEVICE, "OMP_NUM_THREADS": "1"}
    timeout_s = 120.0  # a run takes about 3 s of CPU; the rest is room for a loaded machine

    @classmethod
    def declare(cls) -> ReplicaDeclaration:
        return DECLARATION

    def measure(self, p):
        from tinygrad import Tensor, nn

        out: dict[str, np.ndarray] = {}
        for idiom in DECLARATION.idioms:
            for n in REPLICA_COUNTS:
                key = f"{idiom}/N{n}"
                devices = tuple(f"{DEVICE}:{i}" for i in range(n))
                try:
                    out.update(self._run(Tensor, nn, p, devices, idiom == "shard_batch", key))
                    out[f"{key}/outcome"] = np.array("ok")
                except Exception as e:  # a declared refusal is a measurement
                    out[f"{key}/outcome"] = np.array(f"error:{type(e).__name__}")
                    out[f"{key}/error"] = np.array(str(e).splitlines()[0] if str(e) else "")
        return out

    @staticmethod
    def _run(Tensor, nn, p, devices, shard_state, key):
        n, res = len(devices), {}
        f32 = lambda a: Tensor(np.ascontiguousarray(a, np.float32))
        bn = nn.BatchNorm(p["scale"].size, eps=EPS, momentum=MOMENTUM)
        for t, v in ((bn.weight, p["scale"]), (bn.bias, p["offset"]), (bn.running_mean, p["mean"]),
                     (bn.running_var, p["var"])):
            t.assign(f32(v)).realize()
        state = (bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.num_batches_tracked)
        for t in state if shard_state else state[:2]:
            t.shard_(devices)  # replicated: every device holds a copy
        for step in range(max(STEPS)):
            x = f32(p["xs"][step]).shard(devices, axis=0)
            if step == 0:
                x.requires_grad = True
            with training_mode(True):
                y = bn(x)
                if step == 0:
                    (y * f32(p["dy"]).shard(devices, axis=0)).sum().backward()
                    realize_step(Tensor, [bn], y, x.grad)
                    sizes = even_sizes(n)
                    res[f"{key}/y"] = np.stack(shards(_np(y), sizes))
                    res[f"{key}/dx"] = np.stack(shards(_np(x.grad), sizes))
                else:
                    realize_step(Tensor, [bn], y)
            if step + 1 in STEPS:
                res[f"{key}/mean_k{step + 1}"] = _per_device(Tensor, bn.running_mean, n)
                res[f"{key}/var_k{step + 1}"] = _per_device(Tensor, bn.running_var, n)
        return res


def _np(t) -> np.ndarray:
    return np.asarray(t.numpy(), np.float64)


def _per_device(Tensor, t, n: int) -> np.ndarray:
    """Each device's own copy of a replicated tensor, (n, ...), copied out one device at a time (MSELECT + COPY)."""
    return np.stack([_np(Tensor(t.uop.copy_to_device(DEVICE, arg=i))) for i in range(n)])
