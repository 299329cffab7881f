"""The class-level facts an adapter takes from the framework it runs on, one row per framework: the only home of
what is per framework.

A row (``Framework``) names the packages the adapter imports, its -m markers (families), the distributions it runs on
with their tested releases (``pins``), the versions it reports, the reduced-precision float32 modes it turns off
(adapters/numerics.py), why a device is not visible and the dtypes it runs. An adapter class names its row
(``runs_on = TORCH``) and ``OnFramework`` answers the BatchNormAdapter class methods from it, so adapters over one
framework (tf_keras V2, the V1 layer and the TF1 graph) say these things once; an adapter over two frameworks (Keras 3
on a backend) lists both in ``rows``. The rows live with their framework's adapter module (torch_bn.py,
tf_keras_v2.py, flax_common.py, keras3.py, paddle_bn.py, tinygrad_bn.py, mlx_bn.py). Everything else derives from them
(the plugin's markers, the architecture guard's framework list, the benchmarks' import lines, .ci/assert-gpu) or is
checked against them by meta_tests/test_framework_rows.py (tox.ini, the workflow, the adapter table of
docs/coverage.md, requirements/all.txt and pyproject's extras).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar, Mapping

# Every built-in adapter's framework computes 16-bit inputs and keeps float64 (see each declaration's precision).
FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Framework:
    requires: tuple[str, ...]  # importable module names
    families: tuple[str, ...]  # markers for selection with -m
    pins: Mapping[str, str]  # distribution -> the release the suite is tested on (requirements, tox, extras)
    versions: Callable[[], dict[str, str]] | None = None  # None: a row of facts only (the adapter answers itself)
    numeric_settings: Callable[[], dict] | None = None  # TF32 and the like off, as read back
    device_reason: Callable[[str], "str | None"] | None = None  # None when the device is visible, else why not
    dtypes: tuple[str, ...] = FLOAT_DTYPES
    # Import its modules before any other framework's when several adapters share one process (plain pytest);
    # the reason, observed, in the row's source. A number ranks the rows that must come first: higher imports earlier.
    import_first: bool | int = False


# Distributions that install a row's pinned distribution under another name (tox and the lock file install the
# CPU-only TensorFlow wheel; PaddlePaddle's distribution installs the module its row pins, paddle).
ALIASES = {"tensorflow-cpu": "tensorflow", "paddlepaddle": "paddle"}


def builtin_rows() -> dict[str, tuple[Framework, ...]]:
    """Built-in adapter id -> the rows it runs on (registry.BUILTIN order)."""
    from bnsuite.adapters import registry

    return {i: rows_of(registry.load(i)) for i in registry.BUILTIN}


def rows_of(adapter_cls) -> tuple[Framework, ...]:
    """The rows an adapter class runs on: its ``rows``, else its ``runs_on``, else none (a user's own adapter)."""
    rows = getattr(adapter_cls, "rows", None)
    if rows:
        return tuple(rows)
    row = getattr(adapter_cls, "runs_on", None)
    return (row,) if row is not None else ()


def families() -> tuple[str, ...]:
    """Every family marker of the built-in adapters' rows, in first-seen order."""
    out: dict[str, None] = {}
    for rows in builtin_rows().values():
        for row in rows:
            out.update(dict.fromkeys(row.families))
    return tuple(out)


def pins() -> dict[str, str]:
    """Distribution -> tested release, over every built-in row (one release per distribution)."""
    out: dict[str, str] = {}
    for rows in builtin_rows().values():
        for row in rows:
            for dist, version in row.pins.items():
                if out.setdefault(dist, version) != version:
                    raise ValueError(f"{dist} is pinned to {out[dist]} and to {version} in the framework rows")
    return out


def framework_modules() -> set[str]:
    """Every module a built-in row imports or pins (what only adapters may import)."""
    return {m for rows in builtin_rows().values() for row in rows for m in (*row.requires, *row.pins)}


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


def import_early(adapter_classes) -> None:
    """Where several adapters share one process, import the modules of the rows that must come first (an import
    order a framework crashes on is a fact of its row); a module that is not installed is left to the adapter's skip."""
    import importlib

    if len(adapter_classes) < 2:
        return
    rows = [row for cls in adapter_classes for row in rows_of(cls) if row.import_first]
    for row in sorted(rows, key=lambda r: -int(r.import_first)):  # stable: equal ranks keep the adapters' order
        for module in row.requires:
            try:
                importlib.import_module(module)
            except ImportError:
                pass

