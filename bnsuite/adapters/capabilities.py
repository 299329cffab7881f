"""One way in for capabilities: an adapter names what it can do in one table, and one loader resolves it.

An adapter class carries ``capabilities``, a mapping from a capability name (a key of ``KNOWN``) to a
``"package.module:attribute"`` reference. Subclasses extend it with ``{**Parent.capabilities, "name": "..."}``.
``load(adapter_cls, name)`` resolves one entry with one contract:

* the adapter does not name the capability: ``CapabilityAbsent`` (an ``Unsupported``), so its cases SKIP with a
  reason that names the adapter and the capability;
* the adapter names it but the reference cannot be imported or is not what the capability expects:
  ``CapabilityBroken``, so its cases FAIL, naming the adapter, the capability, the reference and the error.

A user's own adapter plugs into every capability the same way. ``require(adapter_cls, name)`` is the suites' form: a
skip or a failure raised through pytest.
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


class CapabilityAbsent(Unsupported):
    """The adapter does not name this capability; its cases skip with this message."""


class CapabilityBroken(Exception):
    """The adapter names this capability but it cannot be loaded or built; its cases fail with this message."""


def named(adapter_cls) -> Mapping[str, str]:
    """The capability table of an adapter class (empty where it names none)."""
    return dict(getattr(adapter_cls, "capabilities", None) or {})


def load(adapter_cls, name: str, check: Callable[[Any], bool] | None = None) -> Any:
    """The object behind capability `name` of `adapter_cls`; `check` (optional) says whether it is of the right kind.

    Raises CapabilityAbsent where the adapter does not name it, CapabilityBroken where it names it but the reference
    does not import, lacks the attribute, or fails `check`.
    """
    adapter_id = getattr(adapter_cls, "id", adapter_cls.__name__)
    if name not in KNOWN:
        raise KeyError(f"unknown capability {name!r}; known: {', '.join(KNOWN)}")
    ref = named(adapter_cls).get(name)
    if not ref:
        raise CapabilityAbsent(f"{adapter_id}: no {name!r} capability ({KNOWN[name]})")
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise CapabilityBroken(f"{adapter_id}: capability {name!r} names {ref!r}, which is not 'package.module:attr'")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except Exception as e:  # an ImportError, a missing attribute or the module's own failure: all the adapter's fault
        raise CapabilityBroken(f"{adapter_id}: capability {name!r} ({ref}) cannot be loaded: "
                               f"{type(e).__name__}: {e}") from None
    if check is not None and not check(obj):
        raise CapabilityBroken(f"{adapter_id}: capability {name!r} ({ref}) is not of the expected kind: {obj!r}")
    return obj


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
