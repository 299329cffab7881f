"""mlx: a BatchNorm run through mx.compile keeps training mode after bn.eval().

The compiled function (the module's state captured, MLX's recipe for stateful modules) is called once in training
mode; after bn.eval() it still normalizes with the batch statistics and still moves the running statistics.
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import sys

try:
    import numpy as np
    import mlx.core as mx
    import mlx.nn as nn
    print(f"versions: mlx {mx.__version__}, numpy {np.__version__}")

    x = mx.array(np.random.default_rng(0).normal(3.0, 2.0, (8, 5, 5, 4)).astype(np.float32))  # NHWC
    bn = nn.BatchNorm(4)
    call = mx.compile(lambda a: bn(a), inputs=[bn.state], outputs=[bn.state])
    mx.eval(call(x), bn.state)  # one training step, traced in training mode
    bn.eval()
    before = np.array(bn.running_mean)
    y_compiled = np.array(call(x))
    mx.eval(bn.state)
    moved = float(np.abs(np.array(bn.running_mean) - before).max())
    y_eager = np.array(bn(x))  # the same module, eagerly, in inference mode
    diff = float(np.abs(y_compiled - y_eager).max())
    print(f"observed after bn.eval(): compiled output vs eager inference output, max |diff| = {diff:.4f}")
    print(f"observed after bn.eval(): the compiled call moved running_mean by {moved:.4f}")
    print("expected: the same output as eager inference (diff 0) and the running statistics left alone (0)")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if diff > 1e-3 or moved > 0 else 0)
