"""Keras 3 on the torch backend: a Keras layer is a torch.nn.Module, but its train()/eval() mode does nothing. In a
torch-style loop, `bn.train(); bn(x)` runs BatchNormalization in inference mode (moving statistics, no update); after
`bn.eval()`, `bn(x, training=True)` still updates. Only Keras's `training` argument counts.

keras/src/backend/torch/layer.py: TorchLayer inherits nn.Module.train()/eval() and never reads self.training;
keras/src/layers/layer.py resolves `training` from the call argument, the call context or the signature's default.
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")
try:
    import numpy as np
    import keras
    print(f"versions: keras {keras.__version__}, {keras.backend.backend()} "
          f"{sys.modules[keras.backend.backend()].__version__}, numpy {np.__version__}")

    x = np.random.default_rng(0).normal(3.0, 2.0, (16, 4)).astype(np.float32)
    bn = keras.layers.BatchNormalization()
    bn.build(x.shape)
    bn.train()  # a torch training loop: model.train(), then model(x)
    y = keras.ops.convert_to_numpy(bn(x))
    moved_train = float(np.max(np.abs(keras.ops.convert_to_numpy(bn.moving_mean))))
    used = "batch" if np.abs(y.mean(axis=0)).max() < 1e-3 else "moving"
    bn.eval()  # torch's way to freeze a BatchNorm, then a Keras-style training call
    bn(x, training=True)
    moved_eval = float(np.max(np.abs(keras.ops.convert_to_numpy(bn.moving_mean)))) - moved_train
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
print(f"observed: after bn.train(), bn(x) used {used} statistics and moved moving_mean by {moved_train:.4f}; after "
      f"bn.eval(), bn(x, training=True) moved it by {moved_eval:.4f}")
print("expected (a torch.nn.Module's train/eval mode): train() -> batch statistics and an update; eval() -> moving "
      "statistics and no update")
sys.exit(1 if moved_train == 0 or moved_eval != 0 else 0)
