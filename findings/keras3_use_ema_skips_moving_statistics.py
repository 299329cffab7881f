"""Keras 3 `use_ema=True` averages trainable variables only: after fit, BatchNormalization's gamma/beta are their EMA
while its moving statistics keep the last step's values (keras/src/optimizers/base_optimizer.py walks
self._trainable_variables only). Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
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
    steps, m, d = 3, 8, 0.5
    x = rng.normal(2.0, 1.5, (steps * m, 3)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)

    def model(**opt):
        net = keras.Sequential([keras.Input((3,)), bn := keras.layers.BatchNormalization(momentum=0.5)])
        net.compile(optimizer=keras.optimizers.SGD(0.5, **opt), loss=lambda t, p: keras.ops.sum(t * p, axis=-1))
        return bn, net

    read = lambda v: keras.ops.convert_to_numpy(v).astype(np.float64)
    bn, net = model()  # the same training without EMA, one step at a time: the snapshots the EMA sees
    snaps = []
    for i in range(steps):
        net.fit(x[i * m:(i + 1) * m], dy[i * m:(i + 1) * m], batch_size=m, verbose=0)
        snaps.append((read(bn.gamma), read(bn.moving_mean)))
    ema_gamma, ema_mean = snaps[0]
    for g, mu in snaps[1:]:  # Keras's EMA: the first step copies, then d * average + (1 - d) * value
        ema_gamma, ema_mean = d * ema_gamma + (1 - d) * g, d * ema_mean + (1 - d) * mu
    bn, net = model(use_ema=True, ema_momentum=d)
    net.fit(x, dy, batch_size=m, epochs=1, shuffle=False, verbose=0)
    gamma, mean = read(bn.gamma), read(bn.moving_mean)
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
print(f"observed: gamma {gamma.round(5)} (EMA of the snapshots {ema_gamma.round(5)}); moving_mean {mean.round(5)} "
      f"(last step {snaps[-1][1].round(5)}, EMA of the snapshots {ema_mean.round(5)})")  # float32: stable digits only
print("expected (docstring: 'EMA consists of computing an exponential moving average of the weights of the model ... "
      "and periodically overwriting the weights with their moving average'): moving_mean averaged like gamma")
stale = np.allclose(mean, snaps[-1][1], atol=1e-5) and not np.allclose(mean, ema_mean, atol=1e-5)
sys.exit(1 if np.allclose(gamma, ema_gamma, atol=1e-5) and stale else 0)
