"""mlx: nn.GroupNorm groups channels strided (c % num_groups) unless pytorch_compatible=True; torch groups consecutive
channels. Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import sys

try:
    import numpy as np
    import mlx.core as mx
    import mlx.nn as nn
    print(f"versions: mlx {mx.__version__}, numpy {np.__version__}")

    x = np.random.default_rng(0).normal(0.0, 1.0, (2, 4, 4, 6)).astype(np.float32)  # NHWC, 6 channels
    x[..., :3] += 5.0  # the first three channels (torch's group 0) sit far from the others

    def oracle(groups_of):  # float64 GroupNorm, no affine, eps 1e-5
        y = np.empty(x.shape)
        for g in (0, 1):
            idx = [c for c in range(6) if groups_of(c) == g]
            v = x[..., idx].astype(np.float64)
            m, s = v.mean(axis=(1, 2, 3), keepdims=True), v.var(axis=(1, 2, 3), keepdims=True)
            y[..., idx] = (v - m) / np.sqrt(s + 1e-5)
        return y

    y = np.array(nn.GroupNorm(2, 6, affine=False)(mx.array(x)), np.float64)
    err_torch = float(np.abs(y - oracle(lambda c: c // 3)).max())  # consecutive: torch.nn.GroupNorm(2, 6)
    err_strided = float(np.abs(y - oracle(lambda c: c % 2)).max())
    print(f"observed: max |y - consecutive groups| = {err_torch:.3g}, max |y - strided groups| = {err_strided:.3g}")
    print("expected (torch's grouping): channels 0-2 and 3-5 normalized together (error ~1e-6)")
    present = err_strided < 1e-4 < err_torch
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if present else 0)
