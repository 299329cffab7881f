"""A paddle.jit.to_static model in eval() returns outputs with stop_gradient=False, and backward() through them runs
without an error, but leaves every parameter's gradient None: an optimizer step after it changes nothing. The same
model run eagerly in eval() gets its gradients (BatchNorm then normalizes with its running statistics).

paddle/jit/dy2static/pir_partial_program.py: in infer mode (layer.training False) the program is run without a
backward program. Exit 1 while present, 0 once gone, 2 on error.
"""
import sys
import warnings

warnings.filterwarnings("ignore")
try:
    import numpy as np
    import paddle

    print(f"versions: paddle {paddle.__version__}, numpy {np.__version__}")
    x = np.random.default_rng(0).normal(2.0, 3.0, (4, 3, 2, 2)).astype("float32")

    def grads(convert: bool):
        paddle.seed(0)
        model = paddle.nn.Sequential(paddle.nn.Conv2D(3, 3, 1), paddle.nn.BatchNorm2D(3))
        if convert:
            model = paddle.jit.to_static(model, full_graph=True)
        model.eval()  # e.g. fine-tuning with frozen BatchNorm statistics
        y = model(paddle.to_tensor(x))
        y.sum().backward()
        return y.stop_gradient, [p.grad is not None for p in model.parameters() if not p.stop_gradient]

    eager, static = grads(False), grads(True)
    print(f"observed under to_static: output stop_gradient={static[0]}, parameters with a gradient {static[1]}")
    print(f"expected (eager eval()): output stop_gradient={eager[0]}, parameters with a gradient {eager[1]}")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if not static[0] and not any(static[1]) and all(eager[1]) else 0)
