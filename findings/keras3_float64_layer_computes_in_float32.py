"""Keras 3 on the torch (and jax) backend: a float64 BatchNormalization computes in float32, so its float64 output
carries float32 rounding errors (about 1e-7 instead of 1e-15).

keras/src/backend/common/dtypes.py: result_type maps float64 to float32 on every backend but tensorflow
(BIT64_TO_BIT32_DTYPE), and BatchNormalization.call() computes in result_type(inputs.dtype, "float32").
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")
try:
    import numpy as np
    import keras
    print(f"versions: keras {keras.__version__}, {keras.backend.backend()} {sys.modules[keras.backend.backend()].__version__}, numpy {np.__version__}")

    x = np.random.default_rng(0).normal(3.0, 2.0, (64, 8))  # float64
    bn = keras.layers.BatchNormalization(dtype="float64")
    y = keras.ops.convert_to_numpy(bn(x, training=True))
    oracle = (x - x.mean(0)) / np.sqrt(x.var(0) + bn.epsilon)
    err = float(np.max(np.abs(y.astype(np.float64) - oracle)))
    print(f"keras {keras.__version__} ({keras.backend.backend()}): BatchNormalization(dtype='float64') on float64 data")
    print(f"observed: output dtype {y.dtype}, max |output - float64 oracle| = {err:.3g}")
    print("expected: float64 output within about 1e-13 of the oracle (the tensorflow backend gets there)")
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if err > 1e-10 else 0)
