"""Rounding to a dtype, for the oracle and the test data alike: both must see exactly the values a framework sees.

Lives with the adapters (not the suites) because the reference network rounds its canonical weights with it, and
adapters never import suites.
"""

from __future__ import annotations

import numpy as np


def np_dtype(dtype: str):
    """The NumPy dtype named `dtype`; bfloat16 comes from ml_dtypes (which ships with jax and tensorflow)."""
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(dtype)


def representable(a: np.ndarray, dtype: str) -> np.ndarray:
    """Round to `dtype` and back to float64."""
    return np.asarray(np.asarray(a, np.float64).astype(np_dtype(dtype)), np.float64)
