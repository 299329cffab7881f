"""Keras 3 BatchNormalization accepts epsilon=0 and epsilon<0 without a word; a constant channel (variance 0) then
normalizes to NaN. PyTorch raises ValueError ('batch_norm eps must be positive during training'). tf_keras, the TF1
layers and Flax (linen and NNX) accept it too."""

import sys

try:
    import numpy as np
    import keras
    print(f"versions: keras {keras.__version__}, {keras.backend.backend()} {sys.modules[keras.backend.backend()].__version__}, numpy {np.__version__}")

    x = np.random.default_rng(0).standard_normal((16, 3)).astype("float32")
    x[:, 0] = 0.0  # a constant channel, e.g. a dead ReLU feature
    observed = {}
    for eps in (0.0, -1e-3):
        bn = keras.layers.BatchNormalization(epsilon=eps)  # no error here
        y = np.array(bn(x, training=True))
        observed[eps] = y[:, 0]
        print(f"observed: epsilon={eps} accepted, channel 0 = {y[:3, 0]} ... (no error raised)")
    print("expected: a ValueError for epsilon <= 0, as torch.nn.functional.batch_norm raises")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if all(np.isnan(v).all() for v in observed.values()) else 0)
