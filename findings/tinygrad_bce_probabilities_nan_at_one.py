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
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3)).astype(np.float32)
    x[0] = 20.0  # one sample whose logit saturates the sigmoid
    model = nn.Linear(3, 1)
    model.weight, model.bias = Tensor.ones(1, 3) / 3.0, Tensor.zeros(1)
    opt = nn.optim.SGD([model.weight, model.bias], lr=0.1)
    with Context(TRAINING=1):
        opt.zero_grad()
        p = model(Tensor(x)).sigmoid()
        loss = p.binary_crossentropy(Tensor.ones(8, 1))  # every target 1: sample 0 is predicted right, with certainty
        loss.backward()
        Tensor.realize(p, loss, model.weight.grad)
        opt.step()
    g, w = model.weight.grad.numpy(), model.weight.numpy()
    print(f"sigmoid output of sample 0: {p.numpy()[0, 0]!r} (target 1)")
    print(f"observed: loss {loss.item()!r}, dloss/dweight {g.ravel()}, weight after one SGD step {w.ravel()}")
    print("expected: a finite loss and gradient (torch's BCELoss: log clamped at -100, backward (p - t) / "
          "max(p (1 - p), 1e-12), 0 for p = t = 1)")
except Exception as e:  # anything else is not the behaviour under test
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
sys.exit(1 if not (np.isfinite(loss.item()) and np.isfinite(w).all()) else 0)
