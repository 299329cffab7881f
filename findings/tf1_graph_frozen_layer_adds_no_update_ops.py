"""TensorFlow 1 graphs: a layer frozen with trainable=False adds NO ops to tf.GraphKeys.UPDATE_OPS, yet still
normalizes with batch statistics when training=True: its running statistics silently never move.

tf_keras/src/engine/base_layer_v1.py: Layer.updates returns [] for a layer with `not self.trainable and not
self.stateful`, and tf_keras/legacy_tf_layers/base.py adds only those updates to UPDATE_OPS.
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import importlib
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tf.compat.v1.layers needs the legacy Keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
try:
    import numpy as np
    import tensorflow as tf
    print(f"versions: tensorflow {tf.__version__}, tf_keras {importlib.import_module('tf_keras').__version__}, numpy {np.__version__}")

    x = np.random.default_rng(0).normal(3.0, 2.0, (16, 4)).astype(np.float32)
    counts = {}
    for trainable in (True, False):
        g = tf.Graph()
        with g.as_default():
            tf.compat.v1.layers.batch_normalization(tf.constant(x), training=True, trainable=trainable)
            counts[trainable] = len(g.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS))
    print(f"tensorflow {tf.__version__}: tf.compat.v1.layers.batch_normalization(x, training=True, trainable=...)")
    print(f"observed: UPDATE_OPS has {counts[True]} ops with trainable=True, {counts[False]} with trainable=False "
          "(which still normalizes with batch statistics)")
    print(f"expected: {counts[True]} update ops either way, or inference mode when frozen (as the TF2 layer does)")
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if counts[False] == 0 and counts[True] > 0 else 0)
