"""PaddlePaddle's GroupNorm on the CPU computes each group's variance in one pass, E[x^2] - E[x]^2 (clamped at 0): in
float32, a group whose mean is ~1000x its spread loses every digit of its variance and the output is visibly wrong.
LayerNorm and InstanceNorm (two-pass) normalize the same values correctly.

paddle/phi/kernels/cpu/group_norm_kernel.cc: GroupNormKernel, x_var = std::max(x_var - x_mean * x_mean, T(0)).
Exit 1 while present, 0 once gone, 2 on error.
"""
import sys
import warnings

warnings.filterwarnings("ignore")
try:
    import numpy as np
    import paddle

    print(f"versions: paddle {paddle.__version__}, numpy {np.__version__}")
    rng = np.random.default_rng(11)
    stds = rng.uniform(0.5, 2.0, (1, 6, 1, 1))
    x = (rng.standard_normal((8, 6, 6, 6)) * stds + 1000.0).astype("float32")  # mean 1000, std 0.5 to 2
    layer = paddle.nn.GroupNorm(num_groups=6, num_channels=6, epsilon=1e-3)  # one channel per group
    y = layer(paddle.to_tensor(x)).numpy()
    x64 = x.astype(np.float64)
    m = x64.mean(axis=(2, 3), keepdims=True)
    expected = (x64 - m) / np.sqrt(x64.var(axis=(2, 3), keepdims=True) + 1e-3)
    err = float(np.max(np.abs(y - expected)))
    print(f"observed: max abs error {err:.3g} against the float64 two-pass formula")
    print("expected: below 1e-3 (a two-pass float32 variance is within ~1e-4 here)")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if err > 1e-3 else 0)
