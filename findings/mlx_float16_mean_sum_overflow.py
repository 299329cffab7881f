"""mlx: a float32 BatchNorm fed float16 activations whose per-channel sum exceeds 65504 normalizes to NaN.

Every value, the channel's mean (about 70) and its variance fit in float16; mx.mean's float16 sum does not.
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import sys

try:
    import numpy as np
    import mlx.core as mx
    import mlx.nn as nn
    print(f"versions: mlx {mx.__version__}, numpy {np.__version__}")

    x64 = np.random.default_rng(0).normal(70.0, 5.0, (10, 10, 10, 2))  # NHWC: 1000 values per channel
    x = mx.array(x64.astype(np.float32)).astype(mx.float16)  # float16 activations
    bn = nn.BatchNorm(2)  # float32 parameters and statistics, the defaults
    y = bn(x)
    mx.eval(y, bn.state)
    nan_out = int(np.isnan(np.array(y)).sum())
    rm = np.array(bn.running_mean)
    xs = np.array(x.astype(mx.float32), np.float64)
    print(f"observed: {nan_out} NaN outputs of {y.size}; running_mean {rm}; mx.mean {np.array(mx.mean(x, axis=(0, 1, 2)))}")
    print(f"expected: finite outputs; running_mean {0.1 * xs.mean(axis=(0, 1, 2))} (per-channel mean "
          f"{xs.mean(axis=(0, 1, 2))}, variance {xs.var(axis=(0, 1, 2))})")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if nan_out > 0 or not np.isfinite(rm).all() else 0)
