"""mindspore: a function compiled with mindspore.jit that calls a BatchNorm cell keeps training mode after
cell.set_train(False).

The function (AST capture, the default) is called once in training mode; after bn.set_train(False) it still
normalizes with the batch statistics and still moves moving_mean. The same cell called directly (PyNative) in
inference mode normalizes with the running statistics.
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import os
import sys
import tempfile

try:
    import numpy as np
    import mindspore as ms
    print(f"versions: mindspore {ms.__version__}, numpy {np.__version__}")

    os.chdir(tempfile.mkdtemp())  # a failed compilation writes rank_0/om/analyze_fail.ir into the working directory
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    try:  # the NumPy-1 build's first tuple-argument op under NumPy 2 raises SystemError once
        ms.ops.reshape(ms.Tensor(np.ones((2, 3), np.float32)), (3, 2))
    except SystemError:
        pass
    x = ms.Tensor(np.random.default_rng(0).normal(3.0, 2.0, (8, 4, 5, 5)).astype(np.float32))
    bn = ms.nn.BatchNorm2d(4)

    @ms.jit
    def call(t):
        return bn(t)

    bn.set_train(True)
    call(x)  # one training step, compiled in training mode
    bn.set_train(False)
    before = bn.moving_mean.asnumpy().copy()
    y_compiled = call(x).asnumpy()
    moved = float(np.abs(bn.moving_mean.asnumpy() - before).max())
    diff = float(np.abs(y_compiled - bn(x).asnumpy()).max())  # against the same cell in PyNative inference mode
    present = diff > 1e-3 or moved > 0
    print(f"observed after set_train(False): |compiled - PyNative inference| = {diff:.4f}, moving_mean moved by "
          f"{moved:.4f}: {'training mode kept' if present else 'inference mode followed'}")
    print("expected (inference mode): 0 and 0")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if present else 0)
