"""tf_keras: the running variance is the UNBIASED batch variance for rank-4 inputs (fused kernel) but the BIASED one
for rank-2 inputs (non-fused path), for the same layer class and the same data.

tf_keras/src/layers/normalization/batch_normalization.py: _fused_batch_norm (tf.compat.v1.nn.fused_batch_norm applies
Bessel's correction to the variance it returns) vs _calculate_mean_and_var (tf.nn.moments, biased).
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
try:
    import numpy as np
    import tf_keras
    print(f"versions: tf_keras {tf_keras.__version__}, tensorflow {sys.modules['tensorflow'].__version__}, numpy {np.__version__}")

    n = 4  # a small batch makes the Bessel factor n/(n-1) = 4/3 obvious
    x2 = np.random.default_rng(0).normal(0.0, 2.0, (n, 3)).astype(np.float32)
    x4 = x2.reshape(n, 1, 1, 3)  # the same values, as an NHWC image batch
    ratios = {}
    for name, x in (("rank 2 (non-fused)", x2), ("rank 4 (fused)", x4)):
        bn = tf_keras.layers.BatchNormalization(momentum=0.0)  # running stats := the last batch's
        bn(x, training=True)
        ratios[name] = float(np.mean(bn.moving_variance.numpy() / x2.var(axis=0)))
    print(f"tf_keras {tf_keras.__version__}: BatchNormalization(momentum=0.0), one training step on the same {n} rows")
    print("observed: moving_variance / biased batch variance = "
          + ", ".join(f"{k}: {v:.4f}" for k, v in ratios.items()))
    print(f"expected: the same estimator on both code paths (1.0000 and 1.0000, or {n / (n - 1):.4f} twice)")
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if abs(ratios["rank 4 (fused)"] - ratios["rank 2 (non-fused)"]) > 1e-3 else 0)
