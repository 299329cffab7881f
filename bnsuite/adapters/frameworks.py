"""The class-level facts an adapter takes from the framework it runs on, one row per framework.

A row (``Framework``) names the packages the adapter needs, its -m markers, the versions it reports, the
reduced-precision float32 modes it turns off (adapters/numerics.py), why a device is not visible and the dtypes it runs.
An adapter class names its row (``runs_on = TORCH``) and ``OnFramework`` answers the BatchNormAdapter class methods
from it, so adapters over one framework (tf_keras V2, the V1 layer and the TF1 graph) say these things once.
The rows live with their framework's adapter module (torch_bn.py, tf_keras_v2.py, flax_common.py).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar

# Every built-in adapter's framework computes 16-bit inputs and keeps float64 (see each declaration's precision).
FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Framework:
    requires: tuple[str, ...]  # importable module names
    families: tuple[str, ...]  # markers for selection with -m
    versions: Callable[[], dict[str, str]]
    numeric_settings: Callable[[], dict]  # TF32 and the like off, as read back
    device_reason: Callable[[str], "str | None"]  # None when the device ("cpu", "gpu") is visible, else why not
    dtypes: tuple[str, ...] = FLOAT_DTYPES


class OnFramework:
    """Mixed in before BatchNormAdapter: the class methods from ``runs_on``; a class that names a row gets its
    ``requires`` and ``families`` from it (unless it sets them itself)."""

    runs_on: ClassVar[Framework]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        row = cls.__dict__.get("runs_on")
        if row is not None:
            for name in ("requires", "families"):
                if name not in cls.__dict__:
                    setattr(cls, name, getattr(row, name))

    @classmethod
    def versions(cls) -> dict[str, str]:
        return cls.runs_on.versions()

    @classmethod
    def numeric_settings(cls) -> dict:
        return cls.runs_on.numeric_settings()

    @classmethod
    def device_unavailable_reason(cls, device: str) -> str | None:
        return cls.runs_on.device_reason(device)

    @classmethod
    def supported_dtypes(cls) -> tuple[str, ...]:
        return cls.runs_on.dtypes
