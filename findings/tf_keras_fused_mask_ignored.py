"""tf_keras BatchNormalization on a rank-4 input (fused kernel by default) IGNORES call(mask=...): it only emits a
Python warning and computes the batch statistics over every position, padding included. Rank 2/3 inputs use the mask.
The TF1 layer (tf.compat.v1.keras.layers.BatchNormalization) does the same."""

import sys
import warnings

try:
    import numpy as np
    import tf_keras
    print(f"versions: tf_keras {tf_keras.__version__}, tensorflow {sys.modules['tensorflow'].__version__}, numpy {np.__version__}")

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 5, 6, 3)) * 2 + 1).astype("float32")  # NHWC
    mask = rng.random((4, 5, 6)) > 0.4  # True: a real position; False: padding
    x[~mask] = 100.0  # padding values that must not count
    bn = tf_keras.layers.BatchNormalization(momentum=0.0)  # moving stats = this batch's stats
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bn(x, training=True, mask=mask)
    observed = bn.moving_mean.numpy()
    expected = x[mask].mean(axis=0)
    print(f"observed moving_mean {observed} (fused={bn.fused})")
    print(f"expected moving_mean over the unmasked positions {expected}; over every position {x.mean(axis=(0, 1, 2))}")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(0 if np.allclose(observed, expected, rtol=1e-4) else 1)
