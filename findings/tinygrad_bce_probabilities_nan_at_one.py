"""tinygrad: Tensor.binary_crossentropy (on probabilities) takes log(p) and log(1 - p) with no clamp. At a probability
of exactly 1 (a float32 sigmoid of a logit above ~17) the loss is NaN (target 1: 0 * log(0)) or inf (target 0), and
one SGD step turns every weight NaN, even when the prediction is right. torch's BCELoss, which the docstring points
to, clamps the log at -100: finite loss and gradient. binary_crossentropy_logits is finite.
Exit 1 while the behaviour is present, 0 once gone, 2 on any other error.
"""
import importlib.metadata
import sys

try:
    import numpy as np
    from tinygrad import Tensor, nn
    from tinygrad.helpers import Context

    print(f"versions: tinygrad {importlib.metadata.version('tinygrad')}, numpy {np.__version__}")
    # Eight samples of three features; the first has a logit of 20, whose sigmoid rounds to 1.0 in float32.
    feats = np.vstack([np.full((1, 3), 20.0), np.random.default_rng(0).standard_normal((7, 3))]).astype(np.float32)
    model = nn.Linear(3, 1)
    model.weight, model.bias = Tensor.full((1, 3), 1.0 / 3.0), Tensor.zeros(1)
    opt = nn.optim.SGD([model.weight, model.bias], lr=0.1)
    with Context(TRAINING=1):
        opt.zero_grad()
        prob = model(Tensor(feats)).sigmoid()
        loss = prob.binary_crossentropy(Tensor.ones(8, 1))  # all targets 1: the first sample is right, with certainty
        loss.backward()
        Tensor.realize(prob, loss, model.weight.grad)
        opt.step()
    grad, after = model.weight.grad.numpy().ravel(), model.weight.numpy().ravel()
    print(f"sigmoid output of sample 0: {prob.numpy()[0, 0]!r} (target 1)")
    print(f"observed: loss {loss.item()!r}, dloss/dweight {grad}, weight after one SGD step {after}")
    print("expected: a finite loss and gradient (torch's BCELoss: log clamped at -100, backward (p - t) / "
          "max(p (1 - p), 1e-12), 0 for p = t = 1)")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(0 if np.isfinite(loss.item()) and np.isfinite(after).all() else 1)
