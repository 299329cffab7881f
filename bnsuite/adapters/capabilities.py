"""One way in for capabilities: an adapter names what it can do in one table, and one loader resolves it.

An adapter class carries ``capabilities``, a mapping from a capability name (a key of ``KNOWN``) to a
``"package.module:attribute"`` reference. Subclasses extend it with ``{**Parent.capabilities, "name": "..."}``.
``load(adapter_cls, name)`` resolves one entry with one contract:

* the adapter does not name the capability: ``CapabilityAbsent`` (an ``Unsupported``), so its cases SKIP with a
  reason that names the adapter and the capability;
* the adapter names it but the reference cannot be imported or is not what the capability expects:
  ``CapabilityBroken``, so its cases FAIL, naming the adapter, the capability, the reference and the error.

A user's own adapter plugs into every capability the same way. ``require(adapter_cls, name)`` is the suites' form: a
skip or a failure raised through pytest. A built-in framework keeps its implementation of a capability at the home
``CONVENTION`` names (``conventional("paddle", "norms")`` is ``{"norms": "bnsuite.adapters.norms.paddle_norms:
PaddleNorms"}``); an entry that lives elsewhere is written out whole.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

from bnsuite.adapters.base import Unsupported

# name -> what the capability is (printed in skip reasons, the report and the "how to add" checklist).
KNOWN: Mapping[str, str] = {
    "network": "small conv-BN networks built in the framework (bnsuite.adapters.nets)",
    "norms": "LayerNorm, GroupNorm, InstanceNorm and RMSNorm (bnsuite.adapters.norms)",
    "blocks": "Dropout, ReLU and one-unit activations around BatchNorm (bnsuite.adapters.blocks)",
    "replicas": "the layer split over replicas by the framework's distributed engine (bnsuite.adapters.replicas)",
    "mixed_precision": "the framework's mixed-precision idioms (bnsuite.adapters.mixed_precision)",
    "edge_facts": "declared behaviour on inputs that break BatchNorm (bnsuite.adapters.edge_facts)",
    "compile": "the layer run through the framework's compilers and function transforms (bnsuite.lanes.compile)",
    "training_loops": "gradient accumulation and weight averaging around BatchNorm (bnsuite.lanes.loops)",
    "deploy": "the layer and networks exported and run in deployment runtimes (bnsuite.lanes.deploy)",
    "folding": "conv-BN folding and quantization-aware training (bnsuite.lanes.folding)",
    "models": "real architectures built in the framework (bnsuite.models)",
}


# name -> (module, attribute) of a framework's implementation at its conventional home, formatted with the framework's
# module stem (`stem`, "torch"), its class prefix (`prefix`, "Torch") and the upper-case stem (`STEM`, "TORCH").
CONVENTION: Mapping[str, tuple[str, str]] = {
    "network": ("bnsuite.adapters.nets.{stem}_net", "build"),
    "norms": ("bnsuite.adapters.norms.{stem}_norms", "{prefix}Norms"),
    "blocks": ("bnsuite.adapters.blocks.{stem}_blocks", "{prefix}Blocks"),
    "mixed_precision": ("bnsuite.adapters.mixed_precision.{stem}_mixed", "step"),
    "edge_facts": ("bnsuite.adapters.edge_facts", "{STEM}"),
    "compile": ("bnsuite.lanes.compile.{stem}_compile", "{prefix}Compile"),
    "training_loops": ("bnsuite.lanes.loops.{stem}_loops", "{prefix}Loops"),
    "deploy": ("bnsuite.lanes.deploy.{stem}_deploy", "{prefix}Deploy"),
    "folding": ("bnsuite.lanes.folding.{stem}_folding", "{prefix}Folding"),
    "models": ("bnsuite.models.{stem}_models", "MODELS"),
}


def conventional(stem: str, *names: str, prefix: str = "") -> dict[str, str]:
    """The references of capabilities `names` at their CONVENTION homes for the framework whose modules are named
    `stem`; `prefix` starts the class names (default: the stem capitalized)."""
    fill = dict(stem=stem, prefix=prefix or stem.capitalize(), STEM=stem.upper())
    return {name: ":".join(CONVENTION[name]).format(**fill) for name in names}


class CapabilityAbsent(Unsupported):
    """The adapter does not name this capability; its cases skip with this message."""


class CapabilityBroken(Exception):
    """The adapter names this capability but it cannot be loaded or built; its cases fail with this message."""


def named(adapter_cls) -> Mapping[str, str]:
    """The capability table of an adapter class (empty where it names none)."""
    return dict(getattr(adapter_cls, "capabilities", None) or {})


# name -> what a loaded capability must be, checked by load() (a `check` argument replaces it): "class:<ref>" a
# subclass of that class (compared by name along its MRO, so this module imports no capability package),
# "callable", or "mapping".
EXPECTS: Mapping[str, str] = {
    "network": "callable",
    "norms": "class:bnsuite.adapters.norms:NormAdapter",
    "blocks": "class:bnsuite.adapters.blocks:Blocks",
    "replicas": "class:bnsuite.adapters.replicas:ReplicaEngine",
    "mixed_precision": "callable",
    "edge_facts": "mapping",
    "training_loops": "class:bnsuite.lanes.loops:TrainingLoops",
    "compile": "class:bnsuite.lanes.compile:CompileLane",
}


def _import(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{ref!r} is not 'package.module:attr'")
    return getattr(importlib.import_module(module_name), attr)


def _expected(name: str) -> Callable[[Any], bool] | None:
    want = EXPECTS.get(name)
    if want == "callable":
        return callable
    if want == "mapping":
        return lambda obj: isinstance(obj, Mapping)
    if want is not None and want.startswith("class:"):
        base = want.removeprefix("class:")
        return lambda obj: isinstance(obj, type) and any(f"{k.__module__}:{k.__qualname__}" == base
                                                         for k in obj.__mro__)
    return None


def resolve(ref: str, name: str, owner: str, check: Callable[[Any], bool] | None = None) -> Any:
    """The object behind `ref` ("package.module:attr") as capability `name` of `owner` (who names it, for messages);
    CapabilityBroken where it does not import, lacks the attribute or is not what the capability expects."""
    try:
        obj = _import(ref)
    except Exception as e:  # an ImportError, a missing attribute or the module's own failure: all the adapter's fault
        raise CapabilityBroken(f"{owner}: capability {name!r} ({ref}) cannot be loaded: "
                               f"{type(e).__name__}: {e}") from None
    check = check if check is not None else _expected(name)
    if check is not None and not check(obj):
        raise CapabilityBroken(f"{owner}: capability {name!r} ({ref}) is not of the expected kind "
                               f"({EXPECTS.get(name, 'check')}): {obj!r}")
    return obj


def load(adapter_cls, name: str, check: Callable[[Any], bool] | None = None) -> Any:
    """The object behind capability `name` of `adapter_cls`; `check` (optional) says whether it is of the right kind
    (default: the capability's EXPECTS entry).

    Raises CapabilityAbsent where the adapter does not name it, CapabilityBroken where it names it but the reference
    does not import, lacks the attribute, or fails `check`.
    """
    adapter_id = getattr(adapter_cls, "id", adapter_cls.__name__)
    if name not in KNOWN:
        raise KeyError(f"unknown capability {name!r}; known: {', '.join(KNOWN)}")
    ref = named(adapter_cls).get(name)
    if not ref:
        raise CapabilityAbsent(f"{adapter_id}: no {name!r} capability ({KNOWN[name]})")
    return resolve(ref, name, adapter_id, check)


def require(adapter_cls, name: str, check: Callable[[Any], bool] | None = None) -> Any:
    """load() for a test: skip where the capability is absent, fail (pytest.fail) where it is broken."""
    __tracebackhide__ = True
    import pytest

    try:
        return load(adapter_cls, name, check)
    except CapabilityAbsent as e:
        pytest.skip(str(e))
    except CapabilityBroken as e:
        pytest.fail(str(e), pytrace=False)
