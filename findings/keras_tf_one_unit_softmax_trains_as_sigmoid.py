"""Keras on TensorFlow trains a softmax over ONE unit (the constant 1) as if it were a sigmoid.

softmax caches its input on its output (`_keras_logits`), and binary_crossentropy takes any cached `_keras_logits`
as logits, so fit() descends the sigmoid cross-entropy of the softmax's input while the model's output stays 1.
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
try:
    import numpy as np
    import keras
    print(f"versions: keras {keras.__version__}, {keras.backend.backend()} {sys.modules[keras.backend.backend()].__version__}, numpy {np.__version__}")

    keras.utils.set_random_seed(0)  # the Dense kernel's initial values: the same printout on every run
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 5)).astype("float32")
    t = rng.integers(0, 2, (16, 1)).astype("float32")
    inp = keras.Input((5,))
    model = keras.Model(inp, keras.layers.Softmax()(keras.layers.Dense(1)(inp)))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.BinaryCrossentropy())
    w0 = [w.copy() for w in model.get_weights()]
    model.train_on_batch(x, t)
    change = max(float(np.max(np.abs(a - b))) for a, b in zip(model.get_weights(), w0))
    out = keras.ops.convert_to_numpy(model(x))  # eager: no predict function to trace
    print(f"observed: max weight change after one SGD step {change:.3g}; outputs all 1.0: {bool(np.all(out == 1))}")
    print("expected: 0 (a one-unit softmax is the constant 1, its gradient is exactly zero)")
except Exception as e:  # noqa: BLE001
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if change > 0 else 0)
