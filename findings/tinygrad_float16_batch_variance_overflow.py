"""tinygrad BatchNorm (float32 parameters) fed float16 activations computes the batch variance IN float16: a channel
whose variance exceeds 65504 overflows to inf, every training output collapses to the offset (x_hat = 0) and the
running variance becomes inf. torch's kernels compute 16-bit statistics in float32.

tinygrad/nn/__init__.py: BatchNorm.calc_stats, batch_var = (y*y).mean(axis=...) in the input's dtype.
Exit 1 while present, 0 once gone, 2 on error.
"""
import importlib.metadata
import sys

try:
    import numpy as np
    from tinygrad import Tensor, dtypes, nn
    from tinygrad.helpers import Context

    print(f"versions: tinygrad {importlib.metadata.version('tinygrad')}, numpy {np.__version__}")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((16, 3)) * 1000.0).astype(np.float16)  # variance ~1e6 > 65504, values < 5000
    bn = nn.BatchNorm(3)  # float32 weight, bias and running statistics
    with Context(TRAINING=1):
        y = bn(Tensor(x.astype(np.float32)).cast(dtypes.half)).numpy()
    rv = bn.running_var.numpy()
    xf = x.astype(np.float64)
    expected = (xf - xf.mean(0)) / np.sqrt(xf.var(0) + 1e-5)
    print(f"observed y[:2] {y[:2].tolist()}, running variance {rv}")
    print(f"expected y[:2] {expected[:2].round(4).tolist()}, running variance finite ~{0.9 + 0.1 * xf.var(0, ddof=1)}")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if not np.isfinite(rv).all() and np.abs(y - expected).max() > 0.5 else 0)
