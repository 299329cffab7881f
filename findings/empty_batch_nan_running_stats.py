"""Keras 3 BatchNormalization: one training step on an EMPTY batch (N = 0) sets every moving mean and variance to NaN,
silently (the batch moments of zero values are 0/0). PyTorch leaves its running statistics unchanged instead.
tf_keras, the TF1 layers and Flax (linen and NNX) behave like Keras."""

import sys

try:
    import numpy as np
    import keras
    print(f"versions: keras {keras.__version__}, {keras.backend.backend()} {sys.modules[keras.backend.backend()].__version__}, numpy {np.__version__}")

    rng = np.random.default_rng(0)
    bn = keras.layers.BatchNormalization()
    bn.build((None, 3))
    bn(rng.standard_normal((16, 3)).astype("float32"), training=True)  # a normal step first
    before = keras.ops.convert_to_numpy(bn.moving_mean), keras.ops.convert_to_numpy(bn.moving_variance)
    y = bn(np.zeros((0, 3), "float32"), training=True)  # e.g. the empty last batch of a filtered dataset
    after = keras.ops.convert_to_numpy(bn.moving_mean), keras.ops.convert_to_numpy(bn.moving_variance)
    print(f"output shape {tuple(y.shape)}")
    print(f"observed moving_mean {after[0]}, moving_variance {after[1]}")
    print(f"expected (unchanged, as torch does) {before[0]}, {before[1]}")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if np.isnan(after[0]).any() or np.isnan(after[1]).any() else 0)
