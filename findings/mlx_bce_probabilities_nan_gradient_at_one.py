"""mlx: nn.losses.binary_cross_entropy(with_logits=False) returns a finite loss at a probability of exactly 1 (or 0),
but its gradient there is NaN: the clip that keeps log(1 - p) at -100 multiplies the infinite derivative of the log
by 0. One saturated sigmoid (a logit above ~17 rounds to 1.0 in float32), or a softmax over one unit, then turns every
weight into NaN after one optimizer step, even when the prediction is right. torch's BCELoss gives a finite gradient.
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import sys

try:
    import numpy as np
    import mlx.core as mx
    import mlx.nn as nn
    print(f"versions: mlx {mx.__version__}, numpy {np.__version__}")

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3)).astype(np.float32)
    x[0] = 20.0  # one sample whose logit saturates the sigmoid
    t = np.ones((8, 1), np.float32)  # every target 1: sample 0 is predicted right, with certainty
    model = nn.Linear(3, 1)
    model.weight = mx.ones((1, 3)) / 3.0
    model.bias = mx.zeros((1,))

    def loss_fn(m):
        return nn.losses.binary_cross_entropy(mx.sigmoid(m(mx.array(x))), mx.array(t), with_logits=False)

    loss, grads = nn.value_and_grad(model, loss_fn)(model)
    mx.eval(loss, grads)
    p = np.array(mx.sigmoid(model(mx.array(x))))
    g = np.array(grads["weight"])
    print(f"sigmoid output of sample 0: {p[0, 0]!r} (target 1); loss {loss.item():.6f} (finite)")
    print(f"observed: dloss/dweight = {g.ravel()}")
    print("expected: a finite gradient (torch's BCELoss: (p - t) / max(p (1 - p), 1e-12), 0 for p = t = 1)")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if not np.isfinite(g).all() else 0)
