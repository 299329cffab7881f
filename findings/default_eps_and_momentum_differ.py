"""torch and Keras disagree on BatchNorm's defaults: eps 1e-5 vs 1e-3, and momentum 0.1 weighting the NEW batch
statistic vs 0.99 weighting the OLD running value. A port that keeps the target's defaults changes every output.

torch/nn/modules/batchnorm.py: _NormBase.__init__(eps=1e-5, momentum=0.1); keras/src/layers/normalization/
batch_normalization.py: __init__(momentum=0.99, epsilon=1e-3), moving_mean * momentum + mean * (1 - momentum).
Documented in both; a divergence between frameworks, not a bug. Exit 1 while present, 0 once gone, 2 on error.
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")
try:
    import numpy as np
    import torch
    import keras
    print(f"versions: torch {torch.__version__}, keras {keras.__version__}, {keras.backend.backend()} {sys.modules[keras.backend.backend()].__version__}, numpy {np.__version__}")

    x = np.random.default_rng(0).normal(3.0, 0.02, (16, 4)).astype(np.float32)  # small variance: eps matters
    tbn = torch.nn.BatchNorm1d(4)
    kbn = keras.layers.BatchNormalization()
    yt = tbn(torch.from_numpy(x)).detach().numpy()
    yk = keras.ops.convert_to_numpy(kbn(x, training=True))
    mt, mk = tbn.running_mean.numpy(), keras.ops.convert_to_numpy(kbn.moving_mean)
    print(f"torch {torch.__version__}, keras {keras.__version__}: default BatchNorm, one training step, same input")
    print(f"observed: eps {tbn.eps:g} vs {kbn.epsilon:g}; running mean {mt[0]:.4f} vs {mk[0]:.4f}; "
          f"max output difference {np.max(np.abs(yt - yk)):.3g}")
    print("expected (for a drop-in port): equal defaults, equal running mean, equal outputs")
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if tbn.eps != kbn.epsilon or not np.allclose(mt, mk) else 0)
