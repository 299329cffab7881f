"""mlx: mx.array of a float64 NumPy array is float32 unless dtype=mx.float64 is named, so loading float64 state into a
float64 BatchNorm rounds it silently.

Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import sys

try:
    import numpy as np
    import mlx.core as mx
    import mlx.nn as nn
    print(f"versions: mlx {mx.__version__}, numpy {np.__version__}")

    var = np.random.default_rng(0).uniform(0.5, 2.0, 4)  # a float64 checkpoint's running variance
    bn = nn.BatchNorm(4)
    bn.set_dtype(mx.float64)
    bn.running_var = mx.array(var)  # the obvious load
    loaded = np.array(bn.running_var.astype(mx.float64))
    err = float(np.abs(loaded - var).max())
    print(f"observed: running_var dtype {bn.running_var.dtype}, max |loaded - checkpoint| = {err:.3g}")
    print(f"expected: float64 kept (mx.array(var, dtype=mx.float64) gives "
          f"{float(np.abs(np.array(mx.array(var, dtype=mx.float64)) - var).max()):.3g})")
    present = bn.running_var.dtype != mx.float64
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if present else 0)
