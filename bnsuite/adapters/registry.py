"""Adapter discovery: the built-in ids, and loading a user's adapter from ``package.module:ClassName``."""

from __future__ import annotations

import importlib

from bnsuite.adapters.base import BatchNormAdapter

# id -> "module:Class". Order is the order of the behaviour matrix.
BUILTIN: dict[str, str] = {
    "torch": "bnsuite.adapters.torch_bn:TorchBatchNorm",
    "keras-tensorflow": "bnsuite.adapters.keras3:KerasTensorFlow",
    "keras-jax": "bnsuite.adapters.keras3:KerasJax",
    "keras-torch": "bnsuite.adapters.keras3:KerasTorch",
    "tf_keras": "bnsuite.adapters.tf_keras_v2:TfKerasV2",
    "tf1-keras": "bnsuite.adapters.tf1:Tf1Keras",
    "tf1-graph": "bnsuite.adapters.tf1:Tf1Graph",
    "flax-linen": "bnsuite.adapters.flax_linen:FlaxLinen",
    "flax-nnx": "bnsuite.adapters.flax_nnx:FlaxNnx",
    "paddle": "bnsuite.adapters.paddle_bn:PaddleBatchNorm",
    "tinygrad": "bnsuite.adapters.tinygrad_bn:TinygradBatchNorm",
    "mlx": "bnsuite.adapters.mlx_bn:MlxBatchNorm",
    "mindspore": "bnsuite.adapters.mindspore_bn:MindsporeBatchNorm",
}

ENV_VAR = "BNSUITE_ADAPTER"  # same as --adapter, comma-separated


class AdapterLoadError(Exception):
    """A user-supplied adapter reference that cannot be loaded. str() is one line for the user."""


def load_ref(cls: type[BatchNormAdapter]) -> str:
    """What load() takes to give this class back: its built-in id, else its ``package.module:ClassName`` path."""
    return cls.id if BUILTIN.get(cls.id) == f"{cls.__module__}:{cls.__qualname__}" else \
        f"{cls.__module__}:{cls.__qualname__}"


def load(ref: str) -> type[BatchNormAdapter]:
    """Resolve a built-in id or a ``package.module:ClassName`` path to an adapter class."""
    ref = ref.strip()
    if ref in BUILTIN:
        ref = BUILTIN[ref]
    elif ":" not in ref:
        raise AdapterLoadError(
            f"unknown adapter {ref!r}: use one of {', '.join(BUILTIN)} or a path 'package.module:ClassName'")
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise AdapterLoadError(f"adapter path {ref!r} must look like 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise AdapterLoadError(f"adapter path {ref!r}: cannot import module {module_name!r} ({e})") from None
    except Exception as e:  # the user's module itself fails on import
        raise AdapterLoadError(f"adapter path {ref!r}: importing {module_name!r} raised "
                               f"{type(e).__name__}: {e}") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise AdapterLoadError(f"adapter path {ref!r}: module {module_name!r} has no attribute {attr!r}")
    if not (isinstance(obj, type) and issubclass(obj, BatchNormAdapter)):
        raise AdapterLoadError(f"adapter path {ref!r}: {attr!r} is not a subclass of "
                               "bnsuite.adapters.base.BatchNormAdapter")
    if not getattr(obj, "id", None):
        raise AdapterLoadError(f"adapter path {ref!r}: class {attr!r} sets no `id`")
    return obj


def load_all(refs: list[str] | None) -> list[type[BatchNormAdapter]]:
    """The adapters selected by --adapter / the environment, or every built-in one."""
    refs = refs or list(BUILTIN)
    seen: dict[str, type[BatchNormAdapter]] = {}
    for ref in refs:
        cls = load(ref)
        seen.setdefault(cls.id, cls)
    return list(seen.values())
