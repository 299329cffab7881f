"""Keras 3 `SGD(gradient_accumulation_steps=k)`: the docstring says model variables are updated only every k steps,
but BatchNormalization's moving statistics (model variables) move on every micro-step: after 3 of 4 accumulation
steps the scale and offset are untouched, while the moving mean has taken 3 momentum updates.

keras/src/optimizers/base_optimizer.py: apply() defers the trainable variables' update under ops.cond(is_update_step);
keras/src/layers/normalization/batch_normalization.py: call() assigns moving_mean/moving_variance on every training
call. Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
try:
    import numpy as np
    import keras
    print(f"versions: keras {keras.__version__}, {keras.backend.backend()} "
          f"{sys.modules[keras.backend.backend()].__version__}, numpy {np.__version__}")

    rng = np.random.default_rng(0)
    k, m = 4, 8
    x = rng.normal(2.0, 1.5, ((k - 1) * m, 3)).astype(np.float32)  # 3 micro-batches: no update step yet
    dy = rng.normal(size=x.shape).astype(np.float32)
    bn = keras.layers.BatchNormalization(momentum=0.9)
    model = keras.Sequential([keras.Input((3,)), bn])
    model.compile(optimizer=keras.optimizers.SGD(0.1, gradient_accumulation_steps=k),
                  loss=lambda t, p: keras.ops.sum(t * p, axis=-1))
    model.fit(x, dy, batch_size=m, epochs=1, shuffle=False, verbose=0)
    gamma = keras.ops.convert_to_numpy(bn.gamma)
    moving_mean = keras.ops.convert_to_numpy(bn.moving_mean).astype(np.float64)
    three_updates = np.zeros(3)
    for i in range(k - 1):
        three_updates = 0.9 * three_updates + 0.1 * x[i * m:(i + 1) * m].mean(axis=0)
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
print(f"observed: after {k - 1} of {k} accumulation steps, gamma = {gamma} (untouched), moving_mean = {moving_mean} "
      f"(3 micro-batch updates give {three_updates})")
print("expected (docstring: 'model & optimizer variables will not be updated at every step; instead they will be "
      f"updated every gradient_accumulation_steps steps'): moving_mean still [0. 0. 0.]")
sys.exit(1 if np.max(np.abs(moving_mean)) > 1e-6 else 0)
