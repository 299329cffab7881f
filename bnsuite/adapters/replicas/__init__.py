"""Multi-replica BatchNorm: each framework's real distributed engine, run in a worker subprocess.

An adapter opts in by naming ``"replicas": "module:EngineClass"`` in its capabilities (absent: the replica cases skip;
named but not loadable: they fail). An engine declares, per idiom (DDP with broadcast_buffers, SyncBatchNorm, axis_name,
...), what each replica normalizes with and what its running statistics become (``ReplicaDeclaration``), and measures
every configuration of the plan in ONE worker process that starts the engine (torch.multiprocessing + gloo on loopback,
JAX host devices, TensorFlow logical CPUs). The parent gets plain NumPy arrays back; a worker that hangs is killed with
its whole process group after the engine's timeout, and its cases fail with that message.

Standard library and NumPy only at import: frameworks are imported inside ``ReplicaEngine.measure`` in the worker.

Measurement plan (``plan()``, the same for every engine): K=5 global batches of shape (G=8, C=3) split over N=2 and N=4
replicas in contiguous equal shards, a seeded layer state, canonical momentum 0.1, eps 1e-3; outputs and gradients of
sum(y * dy) at step 1, running statistics of every replica after k=1 and k=5 steps. Three shard cases for one step on
N=2 replicas: uneven (5, 3), one sample (7, 1), empty (8, 0).

Result keys (``Results``): ``<idiom>/N<n>/y`` (N, G/N, C) step-1 outputs per replica, ``.../dx`` gradients,
``.../mean_k<k>``, ``.../var_k<k>`` (N, C) running statistics per replica, ``<idiom>/<shard case>/outcome``
("ok" or "error:<ExceptionClass>"), ``<idiom>/N<n>/error`` (optional) the first line of its message, ``.../y<r>`` per replica outputs, ``.../mean``, ``.../var`` (N, C); and
``<idiom>/skipped`` with a reason where the idiom cannot run here (no GPU, or an API the installed release lacks).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import ClassVar, Mapping

import numpy as np

from bnsuite.adapters import capabilities
from bnsuite.adapters.base import Cited

REPLICA_COUNTS = (2, 4)
STEPS = (1, 5)
GLOBAL_BATCH = 8
CHANNELS = 3
MOMENTUM = 0.1  # canonical: the weight of the new batch statistic
EPS = 1e-3
NO_STRATEGY_SHAPE = (4, 2, 2, CHANNELS)  # NHWC, n = 16 values per channel
HARD_MEAN = 1e4
SHARD_CASES: dict[str, tuple[int, ...]] = {"uneven": (5, 3), "one_sample": (7, 1), "empty": (8, 0)}

# What a replica normalizes with / what its running statistics follow (reference.replica_groups resolves them):
# "local": its own shard; "global": the whole global batch; "pairs": replicas (0, 1), (2, 3), ... together;
# "broadcast0": (running statistics only) replica 0's statistics are copied to every replica before each step, which
# then updates them with its own shard; "unweighted": (normalization only) global, but every replica's moments weigh
# the same whatever the size of its shard.
RULES = ("local", "global", "pairs", "broadcast0", "unweighted")
# What a replica's input gradient is: a normalization rule's backward (cross-replica terms within its group), or
# "own_loss": the global statistics' backward of the replica's own part of the loss only, where the collective's
# backward is the identity (reference.backward_train_replicas).
GRADIENT_RULES = ("local", "global", "pairs", "own_loss")


@dataclasses.dataclass(frozen=True)
class IdiomFacts:
    """What one multi-replica idiom does. Outcomes are "ok", "error:<ExceptionClass>" or "n/a: <why>"."""

    how: str  # the code a user writes, e.g. "DistributedDataParallel(model, broadcast_buffers=False)"
    normalizes: str  # a rule of RULES, or "error:<ExceptionClass>" where the idiom refuses to run here
    running_stats: str  # a rule of RULES (which replicas' shards each replica's running statistics follow)
    replicas_equal: bool  # do all replicas hold the same running statistics after k steps
    gradient: str  # dx rule of GRADIENT_RULES or "n/a: <why>"
    uneven: str = "ok"
    one_sample: str = "ok"
    empty: str = "ok"
    device: str = "cpu"  # "gpu": the idiom runs only where a GPU is visible
    replica_counts: tuple[int, ...] = REPLICA_COUNTS  # the N it applies to (groups of 2 replicas need N = 4)
    # What replicas normalize with when the shards differ in size (the shard cases): "" = as `normalizes`;
    # "unweighted": the plain mean over the group's replicas of each replica's moments (each shard weighs the same,
    # whatever its size).
    shards_normalize: str = ""
    # The first line of the refusal's message where `normalizes` is an error and the message is declared ("": none).
    error: str = ""


@dataclasses.dataclass(frozen=True)
class ReplicaDeclaration:
    framework: str
    default: Cited[str]  # what a model normalizes with when the batch is split and nothing is synchronized
    idioms: Mapping[str, Cited[IdiomFacts]]
    # A synchronized layer used WITHOUT any distribution strategy (one replica), per `synchronized` value:
    # "estimator:<True|False>" -> the running-variance estimator ("biased"/"unbiased") on a rank-4 batch,
    # "variance:<True|False>" -> how the batch variance is computed ("two-pass", "one-pass-clamped", ...).
    without_strategy: Mapping[str, Cited[str]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Results:
    """The worker's arrays, or why there are none (timeout, crash)."""

    arrays: dict[str, np.ndarray]
    error: str | None = None
    wall_s: float = 0.0
    pid: int = 0  # the worker's pid, which is also its process group id

    def get(self, key: str):
        return self.arrays.get(key)

    def text(self, key: str) -> str | None:
        a = self.arrays.get(key)
        return None if a is None else str(a.item() if a.ndim == 0 else a)


def plan(seed: int = 11) -> dict[str, np.ndarray]:
    """The inputs every engine measures, in float32-representable float64 (channel axis 1 of (batch, C))."""
    rng = np.random.default_rng(seed)
    k = max(STEPS)
    means = rng.uniform(-1, 1, CHANNELS)
    stds = rng.uniform(0.5, 2.0, CHANNELS)
    xs = rng.standard_normal((k, GLOBAL_BATCH, CHANNELS)) * stds + means
    # Each replica's shard gets its own offset so local and global statistics differ clearly.
    xs += np.repeat(np.arange(GLOBAL_BATCH // 2), 2)[None, :, None] * 0.5
    f32 = lambda a: np.asarray(np.asarray(a, np.float32), np.float64)
    out = {"xs": f32(xs), "dy": f32(rng.standard_normal((GLOBAL_BATCH, CHANNELS))),
           "scale": f32(rng.uniform(0.5, 1.5, CHANNELS)), "offset": f32(rng.uniform(-0.5, 0.5, CHANNELS)),
           "mean": f32(rng.uniform(-0.5, 0.5, CHANNELS)), "var": f32(rng.uniform(0.5, 2.0, CHANNELS))}
    # One replica, no strategy: a rank-4 channels-last batch (TF's fused kernel path) and the same batch shifted by
    # HARD_MEAN, whose one-pass variance E[x^2] - E[x]^2 loses every float32 digit.
    x4 = rng.standard_normal(NO_STRATEGY_SHAPE) * stds + means
    out["x4"], out["hard4"] = f32(x4), f32(x4 + HARD_MEAN)
    return out


class ReplicaEngine:
    """One framework's multi-replica machinery. Subclasses declare and measure; the worker calls ``measure``."""

    # Environment the worker needs before its framework is imported (host device counts, backends, ...).
    worker_env: ClassVar[Mapping[str, str]] = {}
    # Seconds the worker may take before it is killed with its process group.
    timeout_s: ClassVar[float] = 180.0
    # The adapter's code path (Declaration.running_var_estimator key) the plan's rank-2 batches take.
    code_path: ClassVar[str] = "default"

    @classmethod
    def declare(cls) -> ReplicaDeclaration:
        raise NotImplementedError

    def measure(self, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run every idiom of the declaration on the plan `p` and return the result arrays (see module docstring)."""
        raise NotImplementedError


def resolve_engine(ref: str) -> type[ReplicaEngine]:
    """The engine class behind `ref` ("module:EngineClass", as an adapter's "replicas" capability names it);
    CapabilityBroken where it cannot be loaded or is not a ReplicaEngine."""
    return capabilities.resolve(ref, "replicas", ref)


def shards(x: np.ndarray, sizes) -> list[np.ndarray]:
    """Contiguous shards of the batch axis with the given sizes."""
    edges = np.cumsum([0, *sizes])
    return [x[a:b] for a, b in zip(edges[:-1], edges[1:])]


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports free on the loopback now (bound together, then released for the ranks to listen on)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def even_sizes(n: int) -> tuple[int, ...]:
    return (GLOBAL_BATCH // n,) * n


def merge_ranks(per_rank: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One process-per-replica engine's arrays, rank by rank, as result keys: ``.../outcome`` and ``.../error`` the
    first error any replica of the case met ("ok" / "" where none), ``<shard case>/y<r>`` rank r's own, every other
    field stacked over the case's replicas."""
    out: dict[str, np.ndarray] = {}
    for key in sorted(set().union(*per_rank)):
        idiom, case, field = key.split("/")
        n = int(case[1:]) if case.startswith("N") else len(SHARD_CASES[case])
        if field in ("outcome", "error"):
            vals = [str(per_rank[r][key]) for r in range(n) if key in per_rank[r]]
            out[key] = np.array(next((v for v in vals if v not in ("ok", "")), vals[0]))
        elif field.startswith("y") and not case.startswith("N"):
            out[key] = per_rank[int(field[1:])][key]
        else:
            out[key] = np.stack([per_rank[r][key] for r in range(n)])
    return out


def run_worker(ref: str, timeout_s: float | None = None) -> Results:
    """Measure engine `ref` in a fresh worker process (own process group, killed with its children on timeout)."""
    engine = resolve_engine(ref)
    timeout_s = engine.timeout_s if timeout_s is None else timeout_s
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    with tempfile.TemporaryDirectory(prefix="bnsuite-replicas-") as tmp:
        plan_path, out_path = os.path.join(tmp, "plan.npz"), os.path.join(tmp, "out.npz")
        np.savez(plan_path, **plan())
        # The checkout and the current directory (where a user's adapter module may live) are importable there.
        env = {**os.environ, **engine.worker_env, "PYTHONPATH": os.pathsep.join(
            p for p in (root, os.getcwd(), os.environ.get("PYTHONPATH")) if p)}
        cmd = [sys.executable, "-m", "bnsuite.adapters.replicas.worker", ref, plan_path, out_path]
        t0 = time.time()
        proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            log, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return Results({}, f"the {ref} worker did not finish within {timeout_s:.0f} s (a hung collective?); "
                               "it was killed with its process group", time.time() - t0, proc.pid)
        finally:
            _kill_group(proc)  # children a finished worker left behind
        wall = time.time() - t0
        if proc.returncode != 0 or not os.path.exists(out_path):
            tail = " | ".join(log.strip().splitlines()[-3:])
            return Results({}, f"the {ref} worker exited {proc.returncode}: {tail}", wall, proc.pid)
        with np.load(out_path, allow_pickle=False) as z:
            return Results({k: z[k] for k in z.files}, None, wall, proc.pid)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the worker's process group and wait (up to 5 s) until none of it runs any more."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait()
    deadline = time.time() + 5
    while live_in_group(proc.pid) and time.time() < deadline:
        time.sleep(0.05)


def live_in_group(pgid: int) -> list[int]:
    """Pids of running processes in process group `pgid` (zombies excluded: an init that does not reap leaves them
    behind, dead). Empty where /proc is absent."""
    live = []
    try:
        names = [n for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return live
    for name in names:
        try:
            with open(f"/proc/{name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            live.append(int(name))
    return live


def declaration_record(decl: ReplicaDeclaration) -> dict:
    """The declaration as plain JSON-able data for the results file."""
    return json.loads(json.dumps(dataclasses.asdict(decl), default=str))
