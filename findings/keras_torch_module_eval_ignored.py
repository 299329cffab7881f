"""Keras 3 on the torch backend: a Keras layer is a torch.nn.Module, but `module.eval()` does not freeze its
BatchNormalization: the layer reads only its `training` call argument, so in a torch-style training loop it keeps
normalizing with batch statistics and updating its running statistics.

keras/src/backend/torch/layer.py: TorchLayer never reads nn.Module.training; keras/src/layers/layer.py resolves
`training` from the call arguments only.
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")
try:
    import numpy as np
    import keras

    x = np.random.default_rng(0).normal(3.0, 2.0, (16, 4)).astype(np.float32)
    bn = keras.layers.BatchNormalization()
    bn.build(x.shape)
    bn.eval()  # torch's way to freeze a BatchNorm
    bn(x, training=True)
    moved = float(np.max(np.abs(keras.ops.convert_to_numpy(bn.moving_mean))))
    print(f"keras {keras.__version__} ({keras.backend.backend()}): bn.eval() (torch.nn.Module), then bn(x, training=True)")
    print(f"observed: moving_mean max |value| = {moved:.4f} (moved from 0); bn.training = {bn.training}")
    print("expected (as torch.nn.BatchNorm after eval()): running statistics used and not updated")
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if moved > 0 else 0)
