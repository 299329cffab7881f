"""TensorFlow: `trainable=False` means opposite things in the TF1 and the TF2 Keras layer. The TF2 layer then runs
in inference mode (running statistics); the TF1 layer (tf.compat.v1.keras, and tf.compat.v1.layers) keeps
normalizing with the BATCH statistics when called with training=True.

tf_keras/src/layers/normalization/batch_normalization.py: BatchNormalizationBase._get_training_value only forces
training=False `if self._USE_V2_BEHAVIOR` (the V1 class sets _USE_V2_BEHAVIOR = False).
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import importlib
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # must precede the TensorFlow import for tf.compat.v1.keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
try:
    import numpy as np
    import tensorflow as tf
    print(f"versions: tensorflow {tf.__version__}, tf_keras {importlib.import_module('tf_keras').__version__}, numpy {np.__version__}")

    x = np.random.default_rng(0).normal(3.0, 2.0, (16, 4)).astype(np.float32)
    out = {}
    for name, cls in (("TF2 layer", tf.keras.layers.BatchNormalization),
                      ("TF1 layer", tf.compat.v1.keras.layers.BatchNormalization)):
        bn = cls(trainable=False)
        y = bn(x, training=True).numpy()
        out[name] = "running" if np.allclose(y, (x - 0.0) / np.sqrt(1.0 + bn.epsilon), atol=1e-4) else "batch"
    print(f"tensorflow {tf.__version__}: BatchNormalization(trainable=False) called with training=True")
    print("observed: normalizes with " + ", ".join(f"{k}: {v} statistics" for k, v in out.items()))
    print("expected: the same meaning of trainable=False in both (the TF2 layer: running statistics)")
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if out["TF1 layer"] != out["TF2 layer"] else 0)
