"""Keras 3 on the torch backend computes the batch variance in one pass, E[x^2] - E[x]^2, without clamping at 0: a
large mean over a small spread gives a NEGATIVE running variance and NaN outputs in inference.

keras/src/backend/torch/nn.py: moments() returns mean(square(x)) - square(mean); the tensorflow and jax backends
center first (two-pass) and stay accurate.
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")
try:
    import numpy as np
    import keras
    print(f"versions: keras {keras.__version__}, {keras.backend.backend()} {sys.modules[keras.backend.backend()].__version__}, numpy {np.__version__}")

    x = (1e4 + np.random.default_rng(0).normal(0.0, 1.0, (64, 8))).astype(np.float32)  # mean 10^4 x the spread
    bn = keras.layers.BatchNormalization(momentum=0.0)  # running stats := this batch's
    bn(x, training=True)
    var = keras.ops.convert_to_numpy(bn.moving_variance)
    y = keras.ops.convert_to_numpy(bn(x, training=False))
    true_var = x.astype(np.float64).var(axis=0)
    print(f"keras {keras.__version__} ({keras.backend.backend()}): BatchNormalization(momentum=0.0), one training step "
          "on data with mean 1e4 and std 1")
    print(f"observed: moving_variance min {var.min():.4g}, max {var.max():.4g}; {int((var < 0).sum())} of {var.size} "
          f"negative; {int((~np.isfinite(y)).sum())} non-finite inference outputs")
    print(f"expected: moving_variance = batch variance, {true_var.min():.4g} .. {true_var.max():.4g}; finite outputs")
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if (var < 0).any() or not np.isfinite(y).all() else 0)
