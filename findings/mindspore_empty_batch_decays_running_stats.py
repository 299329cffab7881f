"""mindspore.nn.BatchNorm2d in training mode on an EMPTY batch (N = 0, e.g. a filtered or exhausted last batch)
returns an empty output and moves the running statistics as if the batch had mean 0 and variance 0: moving_variance
drops from 1 to 0.9 and moving_mean decays toward 0, silently, at every such step. torch leaves them unchanged.
Exit 1 while present, 0 once gone, 2 on error (mindspore missing).
"""
import sys

try:
    import numpy as np
    import mindspore as ms

    print(f"versions: mindspore {ms.__version__}, numpy {np.__version__}")
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    rng = np.random.default_rng(0)
    bn = ms.nn.BatchNorm2d(3)
    bn.set_train(True)
    bn(ms.Tensor(rng.normal(2.0, 3.0, (8, 3, 4, 4)).astype(np.float32)))  # an ordinary step first
    mean0, var0 = bn.moving_mean.asnumpy().copy(), bn.moving_variance.asnumpy().copy()
    y = bn(ms.Tensor(np.zeros((0, 3, 4, 4), np.float32)))
    mean1, var1 = bn.moving_mean.asnumpy(), bn.moving_variance.asnumpy()
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
print(f"observed: output shape {tuple(y.shape)}; moving_mean {mean0.tolist()} -> {mean1.tolist()}, "
      f"moving_variance {var0.tolist()} -> {var1.tolist()}")
print("expected: the running statistics unchanged by a batch with no values (or an error)")
sys.exit(1 if not (np.array_equal(mean0, mean1) and np.array_equal(var0, var1)) else 0)
