"""Keras 3 BatchNormalization with a mask and ONE channel fails in training on the jax and torch backends
(IndexError: tuple index out of range): _moments squeezes the masked mean and variance to scalars, dropping the channel
axis of size 1. On the tensorflow backend it fails the same way when axis is given as a positive index."""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

try:
    import numpy as np
    import keras
    print(f"versions: keras {keras.__version__}, {keras.backend.backend()} {sys.modules[keras.backend.backend()].__version__}, numpy {np.__version__}")

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6, 1)).astype("float32")  # (batch, time, one channel)
    mask = rng.random((4, 6)) > 0.4  # padding mask over (batch, time)
    bn = keras.layers.BatchNormalization(momentum=0.0)
    try:
        bn(x, training=True, mask=mask)
        observed = f"moving_mean {keras.ops.convert_to_numpy(bn.moving_mean)}"
    except IndexError as e:
        observed = "IndexError: tuple index out of range" if "out of range" in str(e) else f"IndexError: {e}"
    print(f"observed ({keras.backend.backend()} backend): {observed}")
    print(f"expected: moving_mean {x[mask].mean(axis=0)} (the mean over the unmasked positions)")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if observed.startswith("IndexError") else 0)
