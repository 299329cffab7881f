"""Keras 3 on the torch backend: a BatchNormalization built inside `keras.device("cpu:0")` cannot be frozen;
`layer.trainable = False` raises RuntimeError.

keras/src/backend/torch/core.py: inside a device scope new variables are moved with .to(device), which makes them
non-leaf tensors; setting trainable then calls requires_grad_(False), which torch refuses on non-leaf tensors.
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")
try:
    import numpy as np
    import keras
    print(f"versions: keras {keras.__version__}, {keras.backend.backend()} {sys.modules[keras.backend.backend()].__version__}, numpy {np.__version__}")

    x = np.random.default_rng(0).normal(0.0, 1.0, (8, 3)).astype(np.float32)
    with keras.device("cpu:0"):
        bn = keras.layers.BatchNormalization()
        bn(x, training=True)  # builds the layer and its variables inside the scope
    try:
        bn.trainable = False
        observed = "no error"
    except RuntimeError as e:
        observed = f"RuntimeError: {str(e).splitlines()[0][:160]}"
    print(f"keras {keras.__version__} ({keras.backend.backend()}): layer built in keras.device('cpu:0'), then "
          "trainable = False")
    print(f"observed: {observed}")
    print("expected: no error; the layer is frozen (as on the tensorflow and jax backends)")
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if observed.startswith("RuntimeError") else 0)
