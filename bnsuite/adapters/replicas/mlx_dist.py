"""MLX multi-replica engine: mlx.core.distributed over its ring backend (TCP on 127.0.0.1), one process per replica.

The worker launches each world as ``mlx.launch --backend ring`` does on one host (mlx/_distributed_utils/launch.py:
launch_ring writes a hostfile, a JSON list of ["ip:port"] per rank, and make_launch_script exports MLX_HOSTFILE and
MLX_RANK before running the script), here with free ports on 127.0.0.1 and no shell: a world of 2 processes (N=2 and
the shard cases) and one of 4 (N=4), both at once, since the ring backend cannot split a group ("[ring] Group split
not supported", observed). Each rank calls ``mx.distributed.init(strict=True, backend="ring")`` and trains, on its
contiguous shard, mlx.nn.BatchNorm with the parameter gradients averaged as MLX's documentation shows (tree_map of
all_sum / N, nn.average_gradients), and the synchronized BatchNorm a user writes over all_sum (MLX has none). A rank
that fails has every rank killed at once (the others would wait in all_sum); the ranks are bounded by
``world_timeout_s`` and the worker by the engine's timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.adapters.replicas import (EPS, MOMENTUM, REPLICA_COUNTS, SHARD_CASES, STEPS, IdiomFacts,
                                       ReplicaDeclaration, ReplicaEngine, even_sizes, free_ports, merge_ranks, shards)

_BN = "mlx/nn/layers/normalization.py: BatchNorm"
_UTILS = "mlx/nn/utils.py"
_DOCS = "MLX docs, examples/data_parallelism.rst (Data Parallelism: 'average the gradients across a set of hosts')"
_LOCAL = (f"{_BN}._calc_stats reduces over the rank's own input (mx.mean / mx.var over every axis but the last) and "
          f"{_BN}.__call__ updates running_mean / running_var from them; nothing in the layer or in mlx.nn calls "
          "mx.distributed (MLX has no SyncBatchNorm), so each rank normalizes with its own shard's statistics and its "
          "running statistics follow its own shards (they differ between ranks; checkpointing rank 0 keeps rank 0's); "
          "the averaged gradients are those of the parameters (weight, bias: running_mean / running_var are frozen, "
          f"{_BN}.__init__ freeze(keys=['running_mean', 'running_var'])), the input gradient stays the rank's own")
_ONE = "error:ValueError"
_ONE_WHY = (f"{_BN}.__call__ raises ValueError('BatchNorm training requires more than one value per channel.') on "
            "the rank holding one sample (stats_size == 1)")
# An empty shard is not run: a reduction over an empty axis can hang the rank (and its world) for good.
EMPTY = ("n/a: mx.sum / mx.var over an empty axis hang now and then on the CPU (mlx 0.32.4, finding "
         "mlx_empty_axis_reduction_hangs, checked by the mlx_empty_axis_reduction probe): a rank with an empty shard "
         "may never return from its BatchNorm, and its world with it")


_VJP = ("mlx/distributed/primitives.cpp: AllReduce::vjp returns the cotangents unchanged, while AllReduce::jvp "
        "all_sums the tangents: the backward of an all_sum does not sum the other ranks' cotangents, so a rank's "
        "gradient misses the terms through which its input moves the other ranks' outputs (finding "
        "mlx_all_sum_vjp_identity)")
SYNC_HOW = ("class SyncBatchNorm(nn.BatchNorm) whose __call__ takes the count, the sum and the sum of squares over "
            "every rank with mx.distributed.all_sum (NaiveSyncBatchNorm's recipe, count-weighted; running_var with "
            "the global n / (n - 1)); the step as in average_gradients")


def _data_parallel(how: str, source: str) -> Cited[IdiomFacts]:
    return Cited(IdiomFacts(how=how, normalizes="local", running_stats="local", replicas_equal=False,
                            gradient="local", uneven="ok", one_sample=_ONE, empty=EMPTY),
                 f"{source}; {_LOCAL}; {_ONE_WHY}")


IDIOMS = {
    "all_reduce_grads": _data_parallel(
        "grads = tree_map(lambda g: mx.distributed.all_sum(g) / N, grads); optimizer.update(model, grads) "
        "(the all_reduce_grads of MLX's data-parallelism example), mx.distributed.init(backend='ring')",
        f"{_DOCS}: all_reduce_grads maps mx.distributed.all_sum(x) / N over the gradient tree"),
    "average_gradients": _data_parallel(
        "grads = mlx.nn.average_gradients(grads); optimizer.update(model, grads), "
        "mx.distributed.init(backend='ring')",
        f"{_UTILS}: average_gradients concatenates the gradient arrays into one buffer (all_reduce_size 32 MiB), "
        "all_sum over the group and divides by group.size()"),
    "all_sum_sync_batchnorm": Cited(
        IdiomFacts(how=SYNC_HOW, normalizes="global", running_stats="global", replicas_equal=True,
                   gradient="own_loss", uneven="ok", one_sample="ok", empty=EMPTY),
        "MLX has no synchronized BatchNorm (ml-explore/mlx#27, a NaiveSyncBatchNorm request, closed without "
        "one; mlx/nn/layers/normalization.py has none), so users write one over mx.distributed.all_sum: the "
        "forward all_sums are exact (every rank normalizes with the global batch, its running statistics the "
        f"global ones, equal on every rank, any shard sizes since the count is summed too); {_VJP}: each rank's "
        "input gradient is that of its OWN part of the loss through the global statistics (the own_loss rule), "
        "not the global backward that torch's SyncBatchNorm computes by all-reducing sum_dy and sum_dy_xmu"),
}
DEFAULT = Cited("local", f"{_LOCAL}; {_DOCS}: data parallelism in MLX averages gradients, it never touches "
                         "activations")
DECLARATION = ReplicaDeclaration("mlx", DEFAULT, IDIOMS)


LR = 0.05  # the SGD step between the plan's batches (running statistics do not depend on it)
HOST = "127.0.0.1"


def _last_line(log) -> str:
    log.flush()
    log.seek(0)
    lines = log.read().strip().splitlines()
    return lines[-1] if lines else "(nothing logged)"


def _rank_arrays(tmp: str, rank: int) -> dict[str, np.ndarray]:
    """Rank `rank`'s arrays from every world it belongs to."""
    out: dict[str, np.ndarray] = {}
    for n in (n for n in REPLICA_COUNTS if rank < n):
        with np.load(os.path.join(tmp, f"world{n}-rank{rank}.npz")) as z:
            out.update({k: z[k] for k in z.files})
    return out


class MlxReplicas(ReplicaEngine):
    worker_env = {"OMP_NUM_THREADS": "1"}
    timeout_s = 90.0  # a run takes about 3 s of CPU; the rest is room for a loaded machine
    world_timeout_s = 60.0  # both worlds together, inside the worker's own timeout

    @classmethod
    def declare(cls) -> ReplicaDeclaration:
        return DECLARATION

    def measure(self, p):
        with tempfile.TemporaryDirectory(prefix="bnsuite-mlx-ring-") as tmp:
            np.savez(os.path.join(tmp, "plan.npz"), **p)
            with open(os.path.join(tmp, "idioms.json"), "w") as fh:
                json.dump(list(self.declare().idioms), fh)
            procs = []
            ports = iter(free_ports(sum(REPLICA_COUNTS)))  # distinct across the worlds that run at once
            try:
                for n in REPLICA_COUNTS:
                    procs += self._launch(tmp, n, [next(ports) for _ in range(n)])
                self._wait(procs)
            finally:
                for proc, _ in procs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                for _, log in procs:
                    log.close()
            per_rank = [_rank_arrays(tmp, r) for r in range(max(REPLICA_COUNTS))]
        return merge_ranks(per_rank)

    def _launch(self, tmp: str, n: int, ports: list[int]) -> list:
        """Start world `n`: its hostfile on these loopback ports, then one process per rank (MLX_RANK, MLX_HOSTFILE;
        MLX_RING_VERBOSE, so that a rank's log says where it stopped)."""
        hostfile = os.path.join(tmp, f"hosts{n}.json")
        with open(hostfile, "w") as fh:
            json.dump([[f"{HOST}:{port}"] for port in ports], fh)
        procs = []
        for r in range(n):
            log = open(os.path.join(tmp, f"world{n}-rank{r}.log"), "w+")
            env = {**os.environ, "MLX_RANK": str(r), "MLX_HOSTFILE": hostfile, "MLX_RING_VERBOSE": "1"}
            proc = subprocess.Popen([sys.executable, "-m", __name__, tmp, str(n), type(self).__module__,
                                     type(self).__qualname__], env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
            proc.env_rank = r
            procs.append((proc, log))
        return procs

    def _wait(self, procs) -> None:
        """Until every rank exits 0; RuntimeError (each unfinished rank's last log line) at the first that fails or
        at the deadline."""
        deadline = time.monotonic() + self.world_timeout_s
        while any(proc.poll() is None for proc, _ in procs):
            failed = [proc for proc, _ in procs if proc.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                why = (f"a rank exited {failed[0].returncode}" if failed else
                       f"the ranks did not finish within {self.world_timeout_s:.0f} s")
                raise RuntimeError(f"mlx ring worlds: {why}; " + "; ".join(
                    f"world {p.args[-3]} rank {p.env_rank}: {_last_line(log)}" for p, log in procs
                    if p.poll() != 0))
            time.sleep(0.02)

    # -- in each rank ------------------------------------------------------------------------------------------------
    @staticmethod
    def reduce_grads(idiom: str, grads, group):
        """The parameter gradients averaged over the group, the way the idiom writes it."""
        import mlx.core as mx
        import mlx.nn as nn
        from mlx.utils import tree_map

        if idiom == "all_reduce_grads":
            n = group.size()
            return tree_map(lambda g: mx.distributed.all_sum(g, group=group) / n, grads)
        if idiom in ("average_gradients", "all_sum_sync_batchnorm"):
            return nn.average_gradients(grads, group=group)
        raise ValueError(f"unknown idiom {idiom!r}")

    @classmethod
    def build(cls, idiom: str, p, group):
        """The idiom's BatchNorm layer with the plan's state."""
        import mlx.core as mx
        import mlx.nn as nn

        layer = sync_batchnorm(group) if idiom == "all_sum_sync_batchnorm" else nn.BatchNorm
        bn = layer(p["scale"].size, eps=EPS, momentum=MOMENTUM)
        for attr, key in (("weight", "scale"), ("bias", "offset"), ("running_mean", "mean"), ("running_var", "var")):
            setattr(bn, attr, mx.array(np.asarray(p[key], np.float32)))
        return bn

    @classmethod
    def rank_main(cls, tmp: str, world: int) -> None:
        import mlx.core as mx
        import mlx.optimizers as optim

        group = mx.distributed.init(strict=True, backend="ring")
        rank = group.rank()
        if group.size() != world:
            raise RuntimeError(f"the ring group has {group.size()} ranks, the hostfile {world}")
        with np.load(os.path.join(tmp, "plan.npz")) as z:
            p = {k: z[k] for k in z.files}
        with open(os.path.join(tmp, "idioms.json")) as fh:
            idioms = json.load(fh)
        f32 = lambda a: mx.array(np.ascontiguousarray(a, np.float32))
        npy = lambda a: np.array(a.astype(mx.float32), dtype=np.float64)
        res: dict[str, np.ndarray] = {}
        for idiom in idioms:
            key = f"{idiom}/N{world}"
            print(key, flush=True)  # the log's last line names the case a hung rank is in
            bn, opt = cls.build(idiom, p, group), optim.SGD(learning_rate=LR)
            box = {}

            def loss(params, x, dy):  # nn.value_and_grad's recipe, with the input differentiated too
                bn.update(params)
                box["y"] = bn(x)
                return (box["y"] * dy).sum()

            step_fn = mx.value_and_grad(loss, argnums=(0, 1))
            try:
                for step in range(max(STEPS)):
                    x = f32(shards(p["xs"][step], even_sizes(world))[rank])
                    dy = f32(shards(p["dy"], even_sizes(world))[rank])
                    _, (grads, dx) = step_fn(bn.trainable_parameters(), x, dy)
                    opt.update(bn, cls.reduce_grads(idiom, grads, group))
                    mx.eval(box["y"], dx, bn.parameters(), opt.state)
                    if step == 0:
                        res[f"{key}/y"], res[f"{key}/dx"] = npy(box["y"]), npy(dx)
                    if step + 1 in STEPS:
                        res[f"{key}/mean_k{step + 1}"] = npy(bn.running_mean)
                        res[f"{key}/var_k{step + 1}"] = npy(bn.running_var)
                res[f"{key}/outcome"] = np.array("ok")
            except Exception as e:  # a refusal is a measurement (the other ranks may then wait: the world's timeout)
                res[f"{key}/outcome"] = np.array(f"error:{type(e).__name__}")
                res[f"{key}/error"] = np.array((str(e).strip().splitlines() or [""])[0])
            # Shard cases: one training forward on a world of 2, without a gradient step, so a rank whose forward
            # raises leaves no peer waiting in all_sum.
            for case, sizes in SHARD_CASES.items():
                if len(sizes) != world or getattr(cls.declare().idioms[idiom].value, case).startswith("n/a"):
                    continue
                case_key, bn = f"{idiom}/{case}", cls.build(idiom, p, group)
                print(case_key, flush=True)
                try:
                    y = bn(f32(shards(p["xs"][0], sizes)[rank]))
                    mx.eval(y, bn.parameters())
                    res[f"{case_key}/y{rank}"] = npy(y)
                    res[f"{case_key}/outcome"] = np.array("ok")
                except Exception as e:
                    res[f"{case_key}/outcome"] = np.array(f"error:{type(e).__name__}")
                res[f"{case_key}/mean"], res[f"{case_key}/var"] = npy(bn.running_mean), npy(bn.running_var)
        mx.eval(mx.distributed.all_sum(mx.array([1.0]), group=group))  # every rank done before any writes
        np.savez(os.path.join(tmp, f"world{world}-rank{rank}.npz"), **res)


def sync_batchnorm(group):
    """The synchronized BatchNorm an MLX user writes over mx.distributed.all_sum (MLX has none), after the
    NaiveSyncBatchNorm that ml-explore/mlx#27 asked for: nn.BatchNorm whose statistics come from all_sums of the
    count, the sum and the sum of squares (so shards of any size weigh by their count); the running variance keeps
    nn.BatchNorm's n / (n - 1), with the global n."""
    import mlx.core as mx
    import mlx.nn as nn

    all_sum = lambda a: mx.distributed.all_sum(a, group=group)

    class SyncBatchNorm(nn.BatchNorm):
        def __call__(self, x):
            if not self.training:
                return super().__call__(x)
            # One all_sum of [count, sum, sum of squares]: every rank runs the same collectives in the same order,
            # whatever order the lazy graph is evaluated in (an empty shard's output needs none of them).
            axes, c = tuple(range(x.ndim - 1)), x.shape[-1]
            count = mx.array([float(np.prod(x.shape[:-1]))])
            total = all_sum(mx.concatenate([count, x.sum(axis=axes), (x * x).sum(axis=axes)]))
            n, mean = total[0], total[1:1 + c] / total[0]
            var = total[1 + c:] / n - mean * mean
            mu = self.momentum
            self.running_mean = (1 - mu) * self.running_mean + mu * mean
            self.running_var = (1 - mu) * self.running_var + mu * var * n / (n - 1)
            return self.weight * (x - mean) * mx.rsqrt(var + self.eps) + self.bias

    return SyncBatchNorm


if __name__ == "__main__":
    import importlib

    tmp_dir, world_size, module, qualname = sys.argv[1:5]
    engine_cls = getattr(importlib.import_module(module), qualname)
    engine_cls.rank_main(tmp_dir, int(world_size))
