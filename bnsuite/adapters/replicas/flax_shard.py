"""Flax multi-replica engines: linen and NNX BatchNorm with and without `axis_name`, under jax.shard_map and jax.pmap
over N host CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=4, set in the worker's environment before
jax is imported). One worker measures every idiom; N=2 uses a mesh of the first two devices.

Uneven shards do not exist in shard_map (it splits the global array evenly); the Flax way to hold them is padding
plus BatchNorm's `mask` argument, which the shard cases use: each replica's shard is padded to the largest shard and
the padding masked out.
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, in_range, installed_version
from bnsuite.adapters.replicas import (EPS, MOMENTUM, REPLICA_COUNTS, SHARD_CASES, STEPS, IdiomFacts,
                                       ReplicaDeclaration, ReplicaEngine, even_sizes, shards)

_LINEN = "flax/linen/normalization.py"
_NNX = "flax/nnx/nn/normalization.py"
_STATS = "_compute_stats: maybe_distributed_mean takes x.mean(axes, where=mask) per device, then lax.pmean over " \
         "axis_name (axis_index_groups)"
_UNWEIGHTED = ("padding + mask: each device's masked mean is averaged by lax.pmean with equal weights, so shards of "
               "different sizes get the statistics of the mean of shard means (observed; "
               f"{_STATS})")
_GROUPS_SHMAP = ("jax/_src/lax/parallel.py: psum -> _psum -> bind_psum_invariant raises a bare NotImplementedError "
                 "when axis_index_groups is given for a shard_map axis (lax.pmean is psum / size); only pmap "
                 "implements axis_index_groups")
_PMAP_SHARDS = "n/a: pmap maps over a leading axis of equal shards; uneven shards cannot be expressed"
_NO_SYNC = "without axis_name no collective is traced: each device normalizes with and stores its own statistics"
_SHARD_MAP_SINCE = "0.6.1"


def shard_map_absent() -> str | None:
    """Why the shard_map idioms cannot run on the installed jax (None where they can): they call jax.shard_map, which
    older releases lack (there it was jax.experimental.shard_map.shard_map)."""
    version = installed_version("jax")
    if version is None or not in_range(version, f"<{_SHARD_MAP_SINCE}"):
        return None
    return (f"jax {version} has no jax.shard_map: it arrived in jax {_SHARD_MAP_SINCE} (jax/__init__.py, commit "
            "910a88f4cc 'Expose jax.shard_map as the public non-experimental API')")


def _declaration(module: str, family: str) -> ReplicaDeclaration:
    src = _LINEN if module == "linen" else _NNX
    return ReplicaDeclaration(
        framework=family,
        default=Cited("local", f"{src}: BatchNorm(axis_name=None) computes statistics over the device's input only"),
        idioms={
            "shard_map_axis_name": Cited(
                IdiomFacts(how="BatchNorm(axis_name='batch') inside jax.shard_map(in_specs=P('batch'))",
                           normalizes="global", running_stats="global", replicas_equal=True, gradient="global",
                           shards_normalize="unweighted"),
                f"{src}: {_STATS}; the running statistics are updated from the reduced ones on every device; "
                "the vjp of lax.pmean carries the cross-replica terms; uneven shards: " + _UNWEIGHTED +
                "; a fully masked shard has a NaN mean (0/0) that pmean spreads to every device"),
            "shard_map_no_axis_name": Cited(
                IdiomFacts(how="BatchNorm(axis_name=None) inside jax.shard_map(in_specs=P('batch'))",
                           normalizes="local", running_stats="local", replicas_equal=False, gradient="local",
                           uneven="ok", one_sample="ok", empty="ok"),
                f"{src}: {_NO_SYNC}"),
            "shard_map_axis_index_groups": Cited(
                IdiomFacts(how="BatchNorm(axis_name='batch', axis_index_groups=[[0, 1], [2, 3]]) in "
                               "jax.jit(jax.shard_map(...))", normalizes="error:NotImplementedError",
                           running_stats="n/a: the forward raises", replicas_equal=True,
                           gradient="n/a: the forward raises", uneven="error:NotImplementedError",
                           one_sample="error:NotImplementedError", empty="error:NotImplementedError",
                           replica_counts=(4,)),
                _GROUPS_SHMAP),
            "pmap_axis_name": Cited(
                IdiomFacts(how="jax.pmap(..., axis_name='batch') with BatchNorm(axis_name='batch')",
                           normalizes="global", running_stats="global", replicas_equal=True, gradient="global",
                           uneven=_PMAP_SHARDS, one_sample=_PMAP_SHARDS, empty=_PMAP_SHARDS),
                f"{src}: {_STATS}; jax.pmap binds the named axis"),
            "pmap_axis_index_groups": Cited(
                IdiomFacts(how="jax.pmap with BatchNorm(axis_name='batch', axis_index_groups=[[0, 1], [2, 3]])",
                           normalizes="pairs", running_stats="pairs", replicas_equal=False, gradient="pairs",
                           uneven=_PMAP_SHARDS, one_sample=_PMAP_SHARDS, empty=_PMAP_SHARDS, replica_counts=(4,)),
                f"{src}: {_STATS}: statistics pooled within each group of axis indices"),
        },
    )


class _FlaxReplicas(ReplicaEngine):
    module = "linen"
    worker_env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={max(REPLICA_COUNTS)}",
                  "JAX_PLATFORMS": "cpu"}
    timeout_s = 240.0

    @classmethod
    def declare(cls) -> ReplicaDeclaration:
        return _declaration(cls.module, f"flax.{cls.module}")

    # -- one BatchNorm step as a pure function of (params, stats, x, dy, mask) ------------------------------------
    def _step_fn(self, axis_name, groups):
        import jax

        c = 3
        if self.module == "linen":
            import flax.linen as nn

            bn = nn.BatchNorm(use_running_average=False, axis_name=axis_name, axis_index_groups=groups,
                              momentum=1.0 - MOMENTUM, epsilon=EPS)

            def step(params, stats, x, dy, mask):
                def f(x):
                    y, upd = bn.apply({"params": params, "batch_stats": stats}, x, mask=mask,
                                      mutable=["batch_stats"])
                    return y, upd["batch_stats"]
                y, vjp, new = jax.vjp(f, x, has_aux=True)
                return y, vjp(dy)[0], new
            return step
        from flax import nnx

        def step(params, stats, x, dy, mask):
            def f(x):
                # A module built inside the trace: NNX refuses to update Variables created outside it.
                m = nnx.BatchNorm(c, axis_name=axis_name, axis_index_groups=groups, momentum=1.0 - MOMENTUM,
                                  epsilon=EPS, rngs=nnx.Rngs(0))
                m.scale.value, m.bias.value = params["scale"], params["bias"]
                m.mean.value, m.var.value = stats["mean"], stats["var"]
                y = m(x, use_running_average=False, mask=mask)
                return y, {"mean": m.mean.value, "var": m.var.value}
            y, vjp, new = jax.vjp(f, x, has_aux=True)
            return y, vjp(dy)[0], new
        return step

    def _state(self, p):
        import jax.numpy as jnp

        f32 = lambda a: jnp.asarray(a, jnp.float32)
        return {"scale": f32(p["scale"]), "bias": f32(p["offset"])}, {"mean": f32(p["mean"]), "var": f32(p["var"])}

    def _runner(self, idiom, n):
        """f(params, stats_per_replica, x (n, b, C), dy, mask (n, b, 1)) -> (y, dx, new stats), each (n, ...)."""
        import jax
        from jax.sharding import Mesh, PartitionSpec as P

        transform = "pmap" if idiom.startswith("pmap_") else "shard_map"
        kind = idiom[len(transform) + 1:]
        axis_name = None if kind == "no_axis_name" else "batch"
        groups = [[0, 1], [2, 3]] if kind == "axis_index_groups" else None
        step = self._step_fn(axis_name, groups)
        if transform == "pmap":
            return jax.pmap(step, axis_name="batch", in_axes=(None, 0, 0, 0, 0))
        mesh = Mesh(np.array(jax.devices()[:n]), ("batch",))

        def body(params, stats, x, dy, mask):
            sq = lambda t: jax.tree.map(lambda a: a[0], t)
            y, dx, new = step(params, sq(stats), x[0], dy[0], mask[0])
            return y[None], dx[None], jax.tree.map(lambda a: a[None], new)
        return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(), P("batch"), P("batch"), P("batch"), P("batch")),
                                     out_specs=(P("batch"), P("batch"), P("batch"))))

    def measure(self, p):
        import jax
        import jax.numpy as jnp

        npy = lambda a: np.asarray(a, np.float64)
        out: dict[str, np.ndarray] = {}
        absent = shard_map_absent()
        for idiom, cited in self.declare().idioms.items():
            facts = cited.value
            if absent and idiom.startswith("shard_map_"):
                out[f"{idiom}/skipped"] = np.array(absent)
                continue
            for n in REPLICA_COUNTS:
                if n not in facts.replica_counts:
                    continue
                key = f"{idiom}/N{n}"
                try:
                    run = self._runner(idiom, n)
                    params, stats = self._state(p)
                    stats = jax.tree.map(lambda a: jnp.stack([a] * n), stats)
                    mask = jnp.ones((n, len(p["xs"][0]) // n, 1), bool)
                    for step in range(max(STEPS)):
                        x = jnp.asarray(np.stack(shards(p["xs"][step], even_sizes(n))), jnp.float32)
                        dy = jnp.asarray(np.stack(shards(p["dy"], even_sizes(n))), jnp.float32)
                        y, dx, stats = run(params, stats, x, dy, mask)
                        if step == 0:
                            out[f"{key}/y"], out[f"{key}/dx"] = npy(y), npy(dx)
                        if step + 1 in STEPS:
                            out[f"{key}/mean_k{step + 1}"] = npy(stats["mean"])
                            out[f"{key}/var_k{step + 1}"] = npy(stats["var"])
                    out[f"{key}/outcome"] = np.array("ok")
                except Exception as e:  # a declared refusal is a measurement
                    out[f"{key}/outcome"] = np.array(f"error:{type(e).__name__}")
            if idiom.startswith("pmap"):
                continue  # pmap cannot hold uneven shards (declared n/a)
            for case, sizes in SHARD_CASES.items():
                key, n, width = f"{idiom}/{case}", len(sizes), max(sizes)
                try:
                    run = self._runner(idiom, n)
                    params, stats = self._state(p)
                    stats = jax.tree.map(lambda a: jnp.stack([a] * n), stats)
                    parts = shards(p["xs"][0], sizes)
                    x = np.zeros((n, width, p["xs"].shape[-1]))
                    mask = np.zeros((n, width, 1), bool)
                    for r, part in enumerate(parts):
                        x[r, :len(part)], mask[r, :len(part)] = part, True
                    y, _, new = run(params, stats, jnp.asarray(x, jnp.float32), jnp.zeros_like(jnp.asarray(x)),
                                    jnp.asarray(mask))
                    for r, part in enumerate(parts):
                        out[f"{key}/y{r}"] = npy(y[r, :len(part)])
                    out[f"{key}/mean"], out[f"{key}/var"] = npy(new["mean"]), npy(new["var"])
                    out[f"{key}/outcome"] = np.array("ok")
                except Exception as e:
                    out[f"{key}/outcome"] = np.array(f"error:{type(e).__name__}")
        return out


class FlaxLinenReplicas(_FlaxReplicas):
    module = "linen"


class FlaxNnxReplicas(_FlaxReplicas):
    module = "nnx"
