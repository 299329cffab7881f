"""The real-architecture suite's shared setup: which architectures and freeze idioms run in the main job, the models
built once per process, and the per-layer attribution of a batch-size departure.

The main job runs every architecture each framework has. Freeze idioms: every idiom on ResNet-18; on the other
architectures the Keras and tf_keras models run the transfer-learning idiom only (each idiom on a Keras application
compiles a training step of the whole model). ``BNSUITE_MODELS=all`` runs every idiom on every architecture,
``BNSUITE_MODELS=densenet121,resnet50`` on those named.
"""

from __future__ import annotations

import os

import pytest

from bnsuite.adapters import capabilities

# ResNet-18 runs every freeze idiom everywhere: the cheapest, and the one architecture every framework here has
# (Keras' is bnsuite's own functional ResNet-18, layer for layer torchvision's), so the report compares it side by side.
EVERY_IDIOM_ARCH = "resnet18"
# The idioms the other architectures run in the main job, per framework (absent: every idiom).
MAIN_IDIOMS = {"keras": ("transfer_learning",), "tf_keras": ("transfer_learning",)}
EXTRA = {a.strip() for a in os.environ.get("BNSUITE_MODELS", "").split(",") if a.strip()}
ALL = "all" in EXTRA
_BUILT: dict = {}


def models_for(case, arch: str):
    """The adapter's models capability (skip where absent, fail where broken), skipping an architecture the framework
    does not have."""
    __tracebackhide__ = True
    models = capabilities.require(type(case.adapter) if not isinstance(case.adapter, type) else case.adapter, "models")
    if case.device != "cpu":
        pytest.skip(f"{case.adapter.id}: the real architectures run on the CPU only")
    if arch not in models.architectures:
        pytest.skip(f"{case.adapter.id}: {models.framework} has no {arch} (it has {', '.join(models.architectures)})")
    return models


def idioms_for(models, arch: str) -> list[str]:
    main = MAIN_IDIOMS.get(models.framework)
    every = main is None or ALL or arch in EXTRA or arch == EVERY_IDIOM_ARCH
    return [i for i in models.freeze_idioms if every or i in main]


def built(models, arch: str):
    """The model with collected statistics, built once per process (inference only: callers must not train it)."""
    key = (type(models).__module__, type(models).__qualname__, models.framework, arch)
    if key not in _BUILT:
        _BUILT[key] = models.build(arch)
    return _BUILT[key]


def cause(layers, inputs_of: dict | None = None) -> dict:
    """From a probe report's layers (execution order): the first layer whose output departs at all, its kind, and how
    many BatchNorm layers depart while their input does not (BatchNorm itself introducing it). A BatchNorm's input is
    the layer `inputs_of` names (a graph's depth order), else the layer just before it (torch and linen record in
    execution order, where each BatchNorm follows its convolution)."""
    first = next((l for l in layers if l.comparable and l.max_abs > 0), None)
    by_name = {l.name: l for l in layers}
    introduced = 0
    prev = None
    for l in layers:
        if not l.comparable:
            continue
        src = by_name.get((inputs_of or {}).get(l.name), prev)
        if _kind(l.type) == "BatchNorm" and l.max_abs > 0 and src is not None and src.max_abs == 0:
            introduced += 1
        prev = l
    departed = {}
    for l in layers:
        if l.comparable and l.max_abs > 0:
            departed[_kind(l.type)] = departed.get(_kind(l.type), 0) + 1
    return {"first_layer": first.name if first else None, "first_type": first.type if first else None,
            "first_kind": _kind(first.type) if first else None, "bn_introduced": introduced, "departed": departed}


def _kind(type_name: str) -> str:
    """A layer's kind from its class name (torch, Keras) or, for linen submodules named like torchvision's
    (bn1, conv1, downsample_bn, fc), from its name."""
    t = type_name.lower()
    tokens = t.split("_")
    if "batchnorm" in t or any(k.startswith("bn") for k in tokens):
        return "BatchNorm"
    if "conv" in t:
        return "convolution"
    if "dense" in t or "linear" in t or "fc" in tokens:
        return "dense"
    return "other"
