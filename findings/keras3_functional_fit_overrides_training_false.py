"""Keras 3: `bn(x, training=False)` written into a functional model is overridden by fit(): the layer trains and its
running statistics move (the transfer-learning idiom `base_model(inputs, training=False)` is affected the same way).

keras/src/models/functional.py: Functional._run_through_graph / operation_fn passes fit's training=True to every
layer call, replacing the training=False baked in at graph construction. A subclassed model keeps it; tf_keras keeps it.
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
try:
    import numpy as np
    import keras
    print(f"versions: keras {keras.__version__}, {keras.backend.backend()} {sys.modules[keras.backend.backend()].__version__}, numpy {np.__version__}")

    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (16, 4)).astype(np.float32)
    y = rng.normal(0.0, 1.0, (16, 1)).astype(np.float32)
    inputs = keras.Input((4,))
    bn = keras.layers.BatchNormalization()
    outputs = keras.layers.Dense(1)(bn(inputs, training=False))  # "always inference mode"
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    moved = float(np.max(np.abs(keras.ops.convert_to_numpy(bn.moving_mean))))
    print(f"observed: functional model with bn(x, training=False), after one fit() step: "
          f"moving_mean max |value| = {moved:.4f} (moved from 0)")
    print("expected: moving_mean stays 0 (the layer was called with training=False)")
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if moved > 0 else 0)
