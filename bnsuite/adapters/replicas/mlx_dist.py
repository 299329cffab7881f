"""MLX multi-replica engine: mlx.core.distributed over its ring backend (TCP on 127.0.0.1), one process per replica.

The worker launches each world as ``mlx.launch --backend ring`` does on one host (mlx/_distributed_utils/launch.py:
launch_ring writes a hostfile, a JSON list of ["ip:port"] per rank, and make_launch_script exports MLX_HOSTFILE and
MLX_RANK before running the script), here with free ports on 127.0.0.1 and no shell: a world of 2 processes (N=2 and
the shard cases) and one of 4 (N=4), both at once, since the ring backend cannot split a group ("[ring] Group split
not supported", observed). Each rank calls ``mx.distributed.init(strict=True, backend="ring")`` and trains
mlx.nn.BatchNorm on its contiguous shard, averaging the parameter gradients the way MLX's documentation shows. A rank
that fails has its world killed at once (the others would wait in all_sum); the world is bounded by the engine's
timeout either way.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.adapters.replicas import (EPS, MOMENTUM, REPLICA_COUNTS, SHARD_CASES, STEPS, IdiomFacts,
                                       ReplicaDeclaration, ReplicaEngine, even_sizes, merge_ranks, shards)

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
            "the rank holding one sample (stats_size == 1); a rank with an empty shard passes that check (stats_size "
            "0) and gives an empty output, its running statistics NaN (mx.mean of nothing: finding "
            "empty_batch_nan_running_stats)")


def _data_parallel(how: str, source: str) -> Cited[IdiomFacts]:
    return Cited(IdiomFacts(how=how, normalizes="local", running_stats="local", replicas_equal=False,
                            gradient="local", uneven="ok", one_sample=_ONE, empty="ok"),
                 f"{source}; {_LOCAL}; {_ONE_WHY}")


DECLARATION = ReplicaDeclaration(
    framework="mlx",
    default=Cited("local", f"{_LOCAL}; {_DOCS}: data parallelism in MLX averages gradients, it never touches "
                           "activations"),
    idioms={
        "all_reduce_grads": _data_parallel(
            "grads = tree_map(lambda g: mx.distributed.all_sum(g) / N, grads); optimizer.update(model, grads) "
            "(the all_reduce_grads of MLX's data-parallelism example), mx.distributed.init(backend='ring')",
            f"{_DOCS}: all_reduce_grads maps mx.distributed.all_sum(x) / N over the gradient tree"),
        "average_gradients": _data_parallel(
            "grads = mlx.nn.average_gradients(grads); optimizer.update(model, grads), "
            "mx.distributed.init(backend='ring')",
            f"{_UTILS}: average_gradients concatenates the gradient arrays into one buffer (all_reduce_size 32 MiB), "
            "all_sum over the group and divides by group.size()"),
    },
)

LR = 0.05  # the SGD step between the plan's batches (running statistics do not depend on it)
HOST = "127.0.0.1"


def _free_ports(n: int) -> list[int]:
    """n distinct ports free on the loopback now (bound together, then released for the ranks to listen on)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class MlxReplicas(ReplicaEngine):
    worker_env = {"OMP_NUM_THREADS": "1"}
    timeout_s = 120.0  # a run takes about 2 s of CPU; the rest is room for a loaded machine
    world_timeout_s = 90.0  # both worlds together, inside the worker's own timeout

    @classmethod
    def declare(cls) -> ReplicaDeclaration:
        return DECLARATION

    def measure(self, p):
        idioms = list(self.declare().idioms)
        with tempfile.TemporaryDirectory(prefix="bnsuite-mlx-ring-") as tmp:
            np.savez(os.path.join(tmp, "plan.npz"), **p)
            with open(os.path.join(tmp, "idioms.json"), "w") as fh:
                json.dump(idioms, fh)
            procs = []
            try:
                for n in REPLICA_COUNTS:
                    procs += self._launch(tmp, n)
                self._wait(procs)
            finally:
                for proc, _ in procs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                for _, log in procs:
                    log.close()
            per_rank = [{} for _ in range(max(REPLICA_COUNTS))]
            for n in REPLICA_COUNTS:
                for r in range(n):
                    with np.load(os.path.join(tmp, f"world{n}-rank{r}.npz")) as z:
                        per_rank[r].update({k: z[k] for k in z.files})
        return merge_ranks(per_rank)

    def _launch(self, tmp: str, n: int) -> list:
        """Start world `n`: its hostfile on free loopback ports, then one process per rank (MLX_RANK, MLX_HOSTFILE)."""
        hostfile = os.path.join(tmp, f"hosts{n}.json")
        with open(hostfile, "w") as fh:
            json.dump([[f"{HOST}:{port}"] for port in _free_ports(n)], fh)
        procs = []
        for r in range(n):
            log = open(os.path.join(tmp, f"world{n}-rank{r}.log"), "w+")
            env = {**os.environ, "MLX_RANK": str(r), "MLX_HOSTFILE": hostfile}
            procs.append((subprocess.Popen([sys.executable, "-m", __name__, tmp, str(n), type(self).__module__,
                                            type(self).__qualname__], env=env, cwd=tmp, stdout=log,
                                           stderr=subprocess.STDOUT), log))
        return procs

    def _wait(self, procs) -> None:
        """Until every rank exits 0; RuntimeError (its log's tail) at the first that fails or at the deadline."""
        deadline = time.monotonic() + self.world_timeout_s
        while any(proc.poll() is None for proc, _ in procs):
            failed = [(proc, log) for proc, log in procs if proc.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                proc, log = failed[0] if failed else next((p, lg) for p, lg in procs if p.poll() is None)
                log.flush()
                log.seek(0)
                tail = " | ".join(log.read().strip().splitlines()[-3:])
                why = f"exited {proc.returncode}" if failed else f"did not finish within {self.world_timeout_s:.0f} s"
                raise RuntimeError(f"mlx ring rank ({' '.join(proc.args[-4:-2])}) {why}: {tail}")
            time.sleep(0.02)
        bad = [(proc, log) for proc, log in procs if proc.returncode != 0]
        if bad:
            raise RuntimeError(f"mlx ring rank exited {bad[0][0].returncode}")

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
        if idiom == "average_gradients":
            return nn.average_gradients(grads, group=group)
        raise ValueError(f"unknown idiom {idiom!r}")

    @classmethod
    def build(cls, p):
        import mlx.core as mx
        import mlx.nn as nn

        bn = nn.BatchNorm(p["scale"].size, eps=EPS, momentum=MOMENTUM)
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
            bn, opt = cls.build(p), optim.SGD(learning_rate=LR)
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
                if len(sizes) != world:
                    continue
                case_key, bn = f"{idiom}/{case}", cls.build(p)
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


if __name__ == "__main__":
    import importlib

    tmp_dir, world_size, module, qualname = sys.argv[1:5]
    engine_cls = getattr(importlib.import_module(module), qualname)
    engine_cls.rank_main(tmp_dir, int(world_size))
