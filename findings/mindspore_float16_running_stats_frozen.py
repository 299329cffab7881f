"""A float16 mindspore.nn.BatchNorm2d (dtype=mindspore.float16) in training mode on the CPU normalizes with the batch
statistics but never moves moving_mean / moving_variance: after any number of training steps they are still their
initial zeros and ones, so the trained layer's inference normalizes with mean 0 and variance 1. A float32 layer fed
the same float16 input moves them.
Exit 1 while present, 0 once gone, 2 on error (mindspore missing).
"""
import sys

try:
    import numpy as np
    import mindspore as ms

    print(f"versions: mindspore {ms.__version__}, numpy {np.__version__}")
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    x = np.random.default_rng(0).normal(2.0, 3.0, (8, 3, 4, 4)).astype(np.float16)
    got = {}
    for name, dtype in (("float16 layer", ms.float16), ("float32 layer", ms.float32)):
        bn = ms.nn.BatchNorm2d(3, dtype=dtype)
        bn.set_train(True)
        for _ in range(3):
            bn(ms.Tensor(x))
        got[name] = (bn.moving_mean.asnumpy().astype(np.float64), bn.moving_variance.asnumpy().astype(np.float64))
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
want = 1.0 - 0.9 ** 3  # three steps of momentum 0.9 from 0 toward the batch mean
for name, (mean, var) in got.items():
    print(f"observed {name}: moving_mean {np.round(mean, 4).tolist()}, moving_variance {np.round(var, 4).tolist()}")
expected = np.round(want * x.astype(np.float64).mean((0, 2, 3)), 4).tolist()
print(f"expected: moving_mean about {want:.3f} * batch mean = {expected} for both layers")
mean16, var16 = got["float16 layer"]
sys.exit(1 if np.all(mean16 == 0.0) and np.all(var16 == 1.0) else 0)
