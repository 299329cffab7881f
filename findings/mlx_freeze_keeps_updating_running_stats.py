"""mlx: freeze() does not freeze BatchNorm; in training mode its (already frozen) running statistics still move.

Only bn.eval() stops the update (mlx/nn/layers/normalization.py: BatchNorm.__call__ reads self.training only).
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import sys

try:
    import numpy as np
    import mlx.core as mx
    import mlx.nn as nn
    print(f"versions: mlx {mx.__version__}, numpy {np.__version__}")

    x = mx.array(np.random.default_rng(0).normal(3.0, 2.0, (8, 5, 5, 4)).astype(np.float32))  # NHWC
    bn = nn.BatchNorm(4)
    bn.freeze()  # the documented way to stop training a module
    print(f"trainable parameters after freeze(): {list(bn.trainable_parameters())}")
    y = bn(x)  # the module is still in training mode
    mx.eval(y, bn.parameters())
    moved = float(np.abs(np.array(bn.running_mean)).max())
    print(f"mlx {mx.__version__}: freeze(), then one forward pass in training mode")
    print(f"observed: running_mean max |value| = {moved:.4f} (it moved from 0)")
    print("expected (what 'frozen' suggests): running_mean stays 0; only bn.eval() keeps it")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if moved > 0 else 0)
