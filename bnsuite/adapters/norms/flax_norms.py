"""Flax normalization layers, linen and NNX: LayerNorm, RMSNorm, GroupNorm, InstanceNorm.

None of them has a training mode (no running statistics, no `use_running_average`): training and inference are the
same function, so forward() ignores `training`. The layer is applied under jax.jit, as users run it.
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited, by_version, in_range, installed_version
from bnsuite.adapters.norms import NormAdapter, NormDeclaration, NormFacts, NormSpec

_FAST = ("_compute_stats(use_fast_variance=True): Var = E[|x|^2] - |E[x]|^2 clipped at 0 (the layer's "
         "use_fast_variance defaults to True)")
_XLA = ("not bitwise: XLA compiles one fusion per input shape, and the fused E[x^2] reduction rounds differently for "
        "batch 1 and batch 8 (observed: jax.jit(lambda a: jnp.mean(a * a, -1)) differs by 1 ulp between x[:1] and x on "
        "jax 0.10 CPU; flax LayerNorm on (N, C) by 1.2e-7); within the derived bound instead")
_NNX_INSTANCE_SINCE = "0.12.0"
_LAYOUT = ("GroupNorm reshapes x.shape[:-1] + (num_groups, group_size): the features must be the LAST axis "
           "(channels-last); a channels-first input needs a transpose")


def _layer_variance() -> Cited[str]:
    """LayerNorm's flax code is the same on every release here (use_fast_variance=True); what changed is how XLA's CPU
    backend compiles it."""
    return by_version(
        "jaxlib",
        ("<0.4.32", Cited("two-pass", "MEASURED, no code line found that explains it: the legacy XLA CPU runtime "
                                      "computes LayerNorm's E[x^2] reduction with two-pass accuracy (measured by the "
                                      "drift run with flax 0.8.5 and 0.10.2 on jaxlib "
                                      "0.4.30, and on jaxlib 0.4.38 with XLA_FLAGS=--xla_cpu_use_thunk_runtime=false); "
                                      "jax CHANGELOG 'jaxlib 0.4.32: switched to a new version of the CPU backend'")),
        (">=0.4.32", Cited("one-pass", _FAST)))


def _declaration(api: str, path: str) -> NormDeclaration:
    layer_var = _layer_variance()
    kinds = {
        "layer": Cited(NormFacts(f"flax.{api}.LayerNorm", 1e-6, "last", True, layer_var.value, False),
                       f"{path}: LayerNorm(epsilon=1e-6, reduction_axes=-1, feature_axes=-1, use_scale=True, "
                       f"use_bias=True, use_fast_variance=True); {layer_var.source}; {_XLA}"),
        "rms": Cited(NormFacts(f"flax.{api}.RMSNorm", 1e-6, "last", True, "mean-square", False),
                     f"{path}: RMSNorm(epsilon=1e-6, reduction_axes=-1, use_scale=True), statistics by "
                     f"_compute_stats(use_mean=False): mean of x^2; {_XLA}"),
        "group": Cited(NormFacts(f"flax.{api}.GroupNorm(num_groups)", 1e-6, "channels-last", True, "one-pass",
                                 False),
                       f"{path}: GroupNorm(num_groups=32, epsilon=1e-6, reduction_axes=None: every non-batch "
                       f"axis, use_fast_variance=True); {_LAYOUT}; {_FAST}; {_XLA}"),
        "instance": Cited(NormFacts(f"flax.{api}.InstanceNorm", 1e-6, "channels-last", True, "one-pass", False),
                          f"{path}: InstanceNorm(epsilon=1e-6, feature_axes=-1, use_scale=True, use_bias=True, "
                          f"use_fast_variance=True); {_FAST}; {_XLA}"),
    }
    missing = {}
    version = installed_version("flax")
    if api == "nnx" and version is not None and in_range(version, f"<{_NNX_INSTANCE_SINCE}"):
        del kinds["instance"]
        missing["instance"] = (f"flax {version} has no nnx.InstanceNorm: it arrived in flax {_NNX_INSTANCE_SINCE} "
                               "(flax/nnx/__init__.py, commit 0c0913c3 'implement instance norm in nnx')")
    return NormDeclaration(
        framework=f"flax {api}",
        kinds=kinds,
        missing=missing,
        group_layout=Cited("contiguous", f"{path}: GroupNorm.__call__ reshapes the last axis to (num_groups, "
                                         "group_size): consecutive channels share a group"),
        group_layouts=Cited(("channels-last",), f"{path}: {_LAYOUT}; InstanceNorm takes feature_axes (covered here "
                                                "channels-last only)"),
        instance_running_stats=Cited(None, f"{path}: InstanceNorm has no running statistics and no "
                                           "use_running_average"),
        instance_running_stats_default=Cited(False, f"{path}: InstanceNorm keeps no batch_stats collection"),
        layer_rms_scaling=Cited(None, f"{path}: LayerNorm has no rms_scaling option; RMSNorm is its own layer"),
    )


class _Flax(NormAdapter):
    api: str  # "linen" or "nnx": the namespace flax.<api> holds the layers
    path: str  # the source file the declaration cites

    @classmethod
    def declare(cls) -> NormDeclaration:
        return _declaration(cls.api, cls.path)

    def __init__(self, spec: NormSpec):
        super().__init__(spec)
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp
        self._build(spec)

    def _kwargs(self) -> dict:
        return self.options("epsilon", "use_scale", *() if self.spec.kind == "rms" else ("use_bias",))

    def _layer(self, ns, *features, **kw):
        """The spec's layer from flax namespace `ns` (nnx layers take the feature count first)."""
        s = self.spec
        group = {"num_groups": s.groups} if s.kind == "group" else {}
        name = {"layer": "LayerNorm", "rms": "RMSNorm", "group": "GroupNorm", "instance": "InstanceNorm"}[s.kind]
        return getattr(ns, name)(*features, **group, **self._kwargs(), **kw)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        y = self._apply(self.jnp.asarray(np.asarray(x), dtype=self.spec.dtype))
        return np.asarray(y, np.float64)

    def snippet(self) -> str:
        return f"# flax: {self.declare().kinds[self.spec.kind].value.layer} with {self._kwargs()}  (spec {self.spec})"


class LinenNorms(_Flax):
    framework, api, path = "flax-linen", "linen", "flax/linen/normalization.py"

    def _build(self, spec: NormSpec) -> None:
        import flax.linen as nn

        layer = self._layer(nn)
        shape = (1, 4, 4, spec.num_features)[-spec.rank:] if spec.rank > 2 else (1, spec.num_features)
        self.variables = layer.init(self.jax.random.PRNGKey(0), self.jnp.zeros(shape, spec.dtype))
        self.module = layer
        self._jitted = self.jax.jit(layer.apply)

    def _apply(self, x):
        return self._jitted(self.variables, x)

    def get_params(self):
        p = self.variables.get("params", {})
        get = lambda k: None if k not in p else np.asarray(p[k], np.float64)
        return get("scale"), get("bias")

    def set_params(self, scale, offset) -> None:
        p = dict(self.variables.get("params", {}))
        for k, v in (("scale", scale), ("bias", offset)):
            if k in p and v is not None:
                p[k] = self.jnp.asarray(v, p[k].dtype)
        self.variables = {**self.variables, "params": p}


class NnxNorms(_Flax):
    framework, api, path = "flax-nnx", "nnx", "flax/nnx/nn/normalization.py"

    def _build(self, spec: NormSpec) -> None:
        from flax import nnx

        self.module = self._layer(nnx, spec.num_features, rngs=nnx.Rngs(0))
        self._jitted = nnx.jit(lambda m, x: m(x))

    def _apply(self, x):
        return self._jitted(self.module, x)

    def _param(self, name):
        p = getattr(self.module, name, None)
        return None if p is None else np.asarray(p.value, np.float64)

    def get_params(self):
        return self._param("scale"), self._param("bias")

    def set_params(self, scale, offset) -> None:
        for name, v in (("scale", scale), ("bias", offset)):
            p = getattr(self.module, name, None)
            if p is not None and v is not None:
                p.value = self.jnp.asarray(v, p.value.dtype)
