"""What the broken adapters share: a deliberately wrong declared value, the torch adapter under a declaration with
some values changed, the torch layer built from a wrongly converted spec, and the correct torch layer whose optional
capability (network, norms, blocks, replicas, mixed precision) is a broken implementation."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from bnsuite.adapters.base import Cited, Probe
from bnsuite.adapters.torch_bn import TorchBatchNorm


def wrong(value) -> Cited:
    """A declared value that is wrong on purpose."""
    return Cited(value, "deliberately wrong")


def ref(obj) -> str:
    """"module:name" of a module-level class or function: how an adapter names its network builder, norms, blocks,
    replica engine or mixed-precision runner, and how the meta test passes a broken adapter to --adapter."""
    return f"{obj.__module__}:{obj.__qualname__}"


class WrongDeclaration(TorchBatchNorm):
    """torch's behaviour under torch's declaration with the fields in `wrong_values` changed (each cited as
    deliberately wrong)."""

    wrong_values: ClassVar[dict[str, Any]] = {}

    @classmethod
    def declare(cls):
        return dataclasses.replace(super().declare(), **{k: wrong(v) for k, v in cls.wrong_values.items()})


class ConvertsSpec(TorchBatchNorm):
    """The torch layer built from the spec as `convert` changes it (a conversion bug); a spec that asks for the
    framework's defaults is left alone."""

    @staticmethod
    def convert(spec):
        return spec

    def __init__(self, spec):
        super().__init__(spec if spec.use_defaults else self.convert(spec))


def torch_with(name: str, adapter_id: str, base: type = TorchBatchNorm, **broken) -> type:
    """The broken adapter class `name`: `base` (a correct torch BatchNorm) whose capabilities named in `broken`
    (network=, norms=, blocks=, replicas=, mixed_precision=) are the given broken builders, classes or runners of the
    caller's module, plugged in as a user's adapter would; its docstring is theirs."""
    module = next(iter(broken.values())).__module__
    doc = "A correct torch BatchNorm with a broken " + "; ".join(f"{k}: {v.__doc__}" for k, v in broken.items())
    return type(name, (base,), {"__doc__": doc, "__module__": module, "__qualname__": name, "id": adapter_id,
                                "capabilities": {**base.capabilities, **{k: ref(v) for k, v in broken.items()}}})


def nudge_running_stats(adapter: TorchBatchNorm) -> None:
    """Move the running statistics a little (mean + 0.01, variance * 1.01) outside autograd: the mark of a call that
    should have left them alone."""
    with adapter.torch.no_grad():
        adapter.module.running_mean.add_(0.01)
        adapter.module.running_var.mul_(1.01)


def probe_declared(adapter_cls, prop: str, value: str):
    """A `probes` class method: the real adapter's probe `prop` alone (the others cost their own runs elsewhere),
    declared `value`."""
    return classmethod(lambda cls: [Probe(p.property, wrong(value), p.run) for p in adapter_cls.probes()
                                    if p.property == prop])


class MomentumUnconverted:
    """Mixed in before an adapter that builds `self.bn = self._build()` from `self.kwargs`: passes the canonical
    momentum (weight of the NEW statistic) unchanged where the framework's `momentum` weights the OLD value."""

    def __init__(self, spec):
        super().__init__(spec)
        if not spec.use_defaults and spec.momentum is not None:
            self.kwargs["momentum"] = spec.momentum
            self.bn = self._build()


def declaring_probe(adapter_cls, name: str, adapter_id: str, prop: str, value: str, doc: str, module: str) -> type:
    """A broken adapter class `name` (defined in `module`, so that `ref` finds it): the real `adapter_cls` whose probe
    `prop` alone runs, declared `value`."""
    return type(name, (adapter_cls,), {"__doc__": doc, "__module__": module, "__qualname__": name, "id": adapter_id,
                                       "probes": probe_declared(adapter_cls, prop, value)})
