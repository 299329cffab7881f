"""PaddlePaddle BatchNorm built with use_global_stats=False (the documented way to normalize with the statistics of
the mini-batch) keeps UPDATING its running mean and variance after model.eval(): an evaluation pass changes the
model. torch's track_running_stats=False keeps no running statistics at all.

paddle/nn/functional/norm.py: batch_norm, use_global_stats=False -> trainable_statistics = True;
paddle/phi/kernels/cpu/batch_norm_kernel.cc: test_mode = is_test && !trainable_statistics.
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
    bn = paddle.nn.BatchNorm2D(3, use_global_stats=False)
    bn.eval()
    before = bn._mean.numpy().copy(), bn._variance.numpy().copy()
    with paddle.no_grad():
        bn(paddle.to_tensor(rng.normal(2.0, 3.0, (8, 3, 4, 4)).astype("float32")))  # one evaluation pass
    after = bn._mean.numpy(), bn._variance.numpy()
    print(f"observed running mean {after[0]}, running variance {after[1]} after one eval() forward")
    print(f"expected unchanged {before[0]}, {before[1]}")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if np.any(after[0] != before[0]) or np.any(after[1] != before[1]) else 0)
