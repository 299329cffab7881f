"""PaddlePaddle BatchNorm in training mode on a batch with ONE value per channel (N * spatial = 1) returns the input
unchanged: scale and offset are ignored and the running statistics do not move. The documented formula gives
x_hat = 0, so y = offset (Keras and Flax do that); torch raises ValueError.

paddle/phi/kernels/cpu/batch_norm_kernel.cc: BatchNormKernel, 'if ((N * sample_size) == 1) { ... let y = x.'
Exit 1 while present, 0 once gone, 2 on error.
"""
import sys
import warnings

warnings.filterwarnings("ignore")
try:
    import numpy as np
    import paddle

    print(f"versions: paddle {paddle.__version__}, numpy {np.__version__}")
    rng = np.random.default_rng(0)
    bn = paddle.nn.BatchNorm1D(3)  # training mode by default
    bn.weight.set_value(np.array([2.0, 0.5, 1.5], "float32"))
    bn.bias.set_value(np.array([0.1, -0.2, 0.3], "float32"))
    x = rng.normal(2.0, 3.0, (1, 3)).astype("float32")  # e.g. the last batch of an epoch holding one sample
    y = bn(paddle.to_tensor(x)).numpy()
    print(f"input    {x[0]}")
    print(f"observed {y[0]} (running mean {bn._mean.numpy()})")
    print(f"expected {bn.bias.numpy()} (the offset: x - batch mean = 0), or an error as torch raises")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if np.array_equal(y, x) else 0)
