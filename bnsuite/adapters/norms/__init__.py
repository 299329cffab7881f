"""The normalization-layer interface beside the BatchNorm one: LayerNorm, GroupNorm, InstanceNorm and RMSNorm.

These layers normalize each sample with statistics of that sample alone, so their output must not depend on the batch
size or on the other samples of the batch, in training AND inference: the property BatchNorm lacks.

A BatchNorm adapter names its framework's norm adapter as its "norms" capability, ``capabilities = {..., "norms":
"bnsuite.adapters.norms.torch_norms:TorchNorms"}`` (bnsuite/adapters/capabilities.py: absent, the norm cases skip saying
so; named but not loadable, they fail). Everything crossing this interface is framework-neutral: a NormSpec in, float64
NumPy arrays out, facts declared as data with their sources.

Kinds (canonical semantics, computed by ``reference.py``):

* ``"layer"``: mean and biased variance over the LAST axis (the feature axis of an (N, ..., C) input), per-feature
  scale and offset of shape (C,).
* ``"rms"``: x / sqrt(mean(x^2) + eps) over the last axis, per-feature scale, no offset, no centering.
* ``"group"``: the channels split into ``groups`` groups; statistics over the group's channels and every spatial axis,
  per sample; per-channel scale and offset.
* ``"instance"``: ``"group"`` with one channel per group (statistics over the spatial axes, per sample and channel).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping

import numpy as np

from bnsuite.adapters.base import Cited, Unsupported

KINDS = ("layer", "rms", "group", "instance")
# Values of NormFacts.default_axes: which axes the layer reduces when built with its defaults ("last", "non-batch":
# every axis but the batch axis) or, for group and instance, where it expects the channel axis.
AXES = ("last", "non-batch", "channels-first", "channels-last")
VARIANCE = ("two-pass", "one-pass", "mean-square")


@dataclasses.dataclass(frozen=True)
class NormSpec:
    """A framework-neutral description of one normalization layer."""

    kind: str  # one of KINDS
    num_features: int = 6
    rank: int = 4  # 2 (N, C), 3 or 4
    channels_last: bool = True  # "layer" and "rms" always normalize the last axis
    groups: int = 2  # "group" only
    eps: float = 1e-3
    affine: bool = True
    track_running_stats: bool = False  # "instance" only: keep running statistics (torch's option)
    momentum: float = 0.1  # canonical (weight of the new statistic), running statistics only
    dtype: str = "float32"
    device: str = "cpu"
    use_defaults: bool = False  # the framework's own eps, axes, affine and running-statistics defaults
    rms_scaling: bool = False  # "layer" only: Keras' LayerNormalization(rms_scaling=True)

    @property
    def channel_axis(self) -> int:
        return self.rank - 1 if self.channels_last else 1

    @property
    def layout(self) -> str:
        if self.rank == 2:
            return "NC"
        spatial = {3: "L", 4: "HW"}[self.rank]
        return f"N{spatial}C" if self.channels_last else f"NC{spatial}"

    def replace(self, **changes: Any) -> "NormSpec":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class NormFacts:
    """What one kind is in a framework, as data."""

    layer: str  # the framework class (and arguments) that implements the kind
    default_eps: float | str  # a number, or "dtype-eps" (the machine epsilon of the input dtype)
    default_axes: str  # one of AXES
    default_affine: bool  # a learned scale (and offset, except rms) by default
    variance: str  # one of VARIANCE: how the statistics are computed (decides the error bound)
    bitwise_batch_independent: bool  # a sample's output is bitwise the same in any batch
    training_mode: str = "none"  # "none": the same function in training and inference; else what differs


@dataclasses.dataclass(frozen=True)
class NormDeclaration:
    framework: str
    # kind -> facts; a kind the framework lacks is absent (its cases skip with `missing[kind]` as the reason).
    kinds: Mapping[str, Cited[NormFacts]]
    missing: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # How GroupNorm assigns channels to groups: "contiguous" (group g = channels [g*C/G, (g+1)*C/G)) or "strided".
    group_layout: Cited[str] = Cited("contiguous", "not declared")
    # Channel layouts GroupNorm/InstanceNorm accept: a subset of ("channels-first", "channels-last").
    group_layouts: Cited[tuple[str, ...]] = Cited(("channels-last",), "not declared")
    # InstanceNorm with running statistics: what inference normalizes with ("running") or None (no such option).
    instance_running_stats: Cited[str | None] = Cited(None, "not declared")
    # Whether InstanceNorm keeps running statistics when built with its defaults.
    instance_running_stats_default: Cited[bool] = Cited(False, "not declared")
    # LayerNorm's rms_scaling option: what it divides by ("variance": the centered variance, "mean-square") or None
    # (no such option).
    layer_rms_scaling: Cited[str | None] = Cited(None, "not declared")
    notes: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def facts(self, kind: str) -> Cited[NormFacts] | None:
        return self.kinds.get(kind)


def no_running_stats(source: str) -> dict[str, Cited]:
    """The NormDeclaration fields of an InstanceNorm that keeps no running statistics: it has no such option, so
    inference cannot use them and the default keeps none; both facts rest on `source`."""
    return {"instance_running_stats": Cited(None, source), "instance_running_stats_default": Cited(False, source)}


class NormAdapter(ABC):
    """One normalization layer of one framework, built from a NormSpec. Raises Unsupported where the framework
    cannot express the spec (the case skips with the message). Framework imports happen inside methods."""

    framework: ClassVar[str]
    # The declared facts, as data (returned by declare()); None where declare() computes them. A class that sets it
    # and no `framework` takes the declaration's framework name.
    declaration: ClassVar[NormDeclaration | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        declaration = cls.__dict__.get("declaration")
        if declaration is not None and "framework" not in cls.__dict__:
            cls.framework = declaration.framework

    @classmethod
    def declare(cls) -> NormDeclaration:
        if cls.declaration is None:
            raise NotImplementedError(f"{cls.__name__}: sets no `declaration` and does not implement declare()")
        return cls.declaration

    def __init__(self, spec: NormSpec):
        self.spec = spec
        decl = self.declare()
        if spec.kind not in decl.kinds:
            raise Unsupported(decl.missing.get(spec.kind, f"no {spec.kind} normalization"))
        if spec.kind in ("group", "instance") and spec.rank > 2:
            want = "channels-last" if spec.channels_last else "channels-first"
            if want not in decl.group_layouts.value:
                raise Unsupported(f"{decl.kinds[spec.kind].value.layer} takes {' or '.join(decl.group_layouts.value)} "
                                  f"input only, not {want} ({decl.group_layouts.source})")
        if spec.rms_scaling and decl.layer_rms_scaling.value is None:
            raise Unsupported("LayerNorm has no rms_scaling option "
                              f"({decl.layer_rms_scaling.source})")
        if spec.track_running_stats and decl.instance_running_stats.value is None:
            raise Unsupported(f"no running statistics for {spec.kind} "
                              f"({decl.instance_running_stats.source})")

    def options(self, eps: str, *affine: str) -> dict[str, Any]:
        """The spec's epsilon and affine flag as the framework's keyword arguments: `eps` names the epsilon argument,
        `affine` the flags that give the layer a learned scale (and offset). Empty where the spec asks for the
        framework's defaults."""
        if self.spec.use_defaults:
            return {}
        return {eps: self.spec.eps, **dict.fromkeys(affine, self.spec.affine)}

    @abstractmethod
    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        """The layer's output as float64 (x in the spec's layout and dtype)."""

    @abstractmethod
    def get_params(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(scale, offset) as float64 arrays of shape (C,), None where the layer has none."""

    @abstractmethod
    def set_params(self, scale: np.ndarray | None, offset: np.ndarray | None) -> None:
        ...

    def set_running_stats(self, mean: np.ndarray, var: np.ndarray) -> None:
        raise Unsupported(f"{self.framework}: no running statistics")

    def tracks_running_stats(self) -> bool:
        return False

    def snippet(self) -> str:
        return f"# build {self.framework} {self.spec.kind} norm with {self.spec}"
