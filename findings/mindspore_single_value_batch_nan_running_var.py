"""mindspore.nn.BatchNorm2d in training mode on ONE value per channel (a (1, C, 1, 1) batch, the last short batch of
an epoch after global pooling) returns the offset and writes NaN into moving_variance: the unbiased batch variance of
one value is 0/0. The layer is poisoned silently; every later inference output is NaN. torch raises ValueError
("Expected more than 1 value per channel when training") instead.
Exit 1 while present, 0 once gone, 2 on error (mindspore missing).
"""
import sys

try:
    import numpy as np
    import mindspore as ms

    print(f"versions: mindspore {ms.__version__}, numpy {np.__version__}")
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    x = np.random.default_rng(0).normal(2.0, 3.0, (1, 3, 1, 1)).astype(np.float32)
    bn = ms.nn.BatchNorm2d(3)
    bn.set_train(True)
    y = bn(ms.Tensor(x)).asnumpy()
    var = bn.moving_variance.asnumpy()
    bn.set_train(False)
    later = bn(ms.Tensor(np.random.default_rng(1).normal(size=(4, 3, 2, 2)).astype(np.float32))).asnumpy()
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
print(f"observed: training output {y.ravel().tolist()}, moving_variance {var.tolist()}, "
      f"NaN in a later inference output: {bool(np.isnan(later).any())}")
print("expected: a finite moving_variance (0.9 * 1 + 0.1 * biased variance 0 = 0.9, as TensorFlow keeps) or an error "
      "as torch raises; never a silent NaN")
sys.exit(1 if np.isnan(var).any() else 0)
