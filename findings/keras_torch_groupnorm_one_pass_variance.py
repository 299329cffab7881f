"""Keras 3 GroupNormalization on the torch backend loses every digit (down to NaN) when the mean is large against the
spread.

keras/src/backend/torch/nn.py: moments computes Var = E[x^2] - E[x]^2 without clamping at 0; in float32 with
mean 1000 and std 0.5 to 2 the cancellation leaves no correct digit of the variance (a negative one gives NaN).
The tensorflow and jax backends (two-pass variance) normalize the same input correctly.
"""
import os
import sys

os.environ["KERAS_BACKEND"] = "torch"
try:
    import keras
    import numpy as np
    print(f"versions: keras {keras.__version__}, {keras.backend.backend()} {sys.modules[keras.backend.backend()].__version__}, numpy {np.__version__}")

    rng = np.random.default_rng(11)
    stds = rng.uniform(0.5, 2.0, 6)  # per channel, channels-last
    x = (rng.standard_normal((8, 6, 6, 6)) * stds + 1000.0).astype("float32")  # mean 1000
    layer = keras.layers.GroupNormalization(groups=-1)  # InstanceNorm: statistics over 6 x 6 values
    y = keras.ops.convert_to_numpy(layer(x))
    x64 = x.astype(np.float64)
    m = x64.mean(axis=(1, 2), keepdims=True)
    expected = (x64 - m) / np.sqrt(x64.var(axis=(1, 2), keepdims=True) + 1e-3)
    n_nan = int(np.isnan(y).sum())
    err = float(np.nanmax(np.abs(y - expected)))
    print(f"observed: {n_nan} NaN outputs of {y.size}, max abs error of the rest {err:.3g}")
    print("expected: no NaN, max abs error below 1e-3 (float64 two-pass oracle)")
except Exception as e:  # noqa: BLE001
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if n_nan or err > 1e-3 else 0)
