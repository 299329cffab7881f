"""PaddlePaddle's float64 BatchNorm normalizes with eps (and updates with momentum) rounded to float32: the kernel
takes `float momentum, float epsilon`, so a float64 layer is float64 everywhere except in its two hyper-parameters
(output off by ~1e-8 relative for eps = 1e-3, far above float64's 1e-16).

paddle/phi/kernels/cpu/batch_norm_kernel.cc: BatchNormKernel(..., float momentum, float epsilon, ...).
Exit 1 while present, 0 once gone, 2 on error.
"""
import sys
import warnings

warnings.filterwarnings("ignore")
try:
    import numpy as np
    import paddle

    print(f"versions: paddle {paddle.__version__}, numpy {np.__version__}")
    paddle.set_default_dtype("float64")
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 0.05, (16, 3))  # a small variance, where eps matters
    bn = paddle.nn.BatchNorm1D(3, epsilon=1e-3)
    y = bn(paddle.to_tensor(x)).numpy()
    exact = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3)
    rounded = (x - x.mean(0)) / np.sqrt(x.var(0) + float(np.float32(1e-3)))
    err, err32 = np.abs(y - exact).max(), np.abs(y - rounded).max()
    print(f"observed max |y - float64 oracle with eps=1e-3| = {err:.3g}; with eps=float32(1e-3): {err32:.3g}")
    print("expected a float64 layer within ~1e-15 of the float64 oracle with eps=1e-3")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if err > 1e-12 and err32 < 1e-12 else 0)
