"""The two small networks, framework-neutral: their plan, seeded weights, and a NumPy float64 reference network.

Canonical layout (every framework builder converts from / to this):

* activations: NCHW inside the reference; the input given to ``forward`` / ``sgd_step`` is NHWC when the network was
  built with ``channels_last=True`` (the framework's own layout), else NCHW;
* conv kernels: (out, in, kh, kw) (PyTorch's layout); conv biases (out,);
* dense kernels: (out, in) (PyTorch's nn.Linear layout); dense biases (out,);
* BatchNorm: ``<name>.scale``, ``<name>.offset``, ``<name>.mean``, ``<name>.var``, each (C,).

Plans (a list of ops acting on the current activation h):

* "conv_bn_relu_dense": conv 3x3 (3 -> 8, "same", bias) -> BN -> ReLU -> global average pool -> dense 8 -> 4;
* "bn_stack": DenseNet-like: 20 blocks ``h = concat(h, conv1x1(relu(bn(h))))`` with growth 4 (channels 3, 7, ...,
  79 in, 83 out), then BN -> ReLU -> global average pool -> dense 83 -> 4: 21 BatchNorm layers.

The reference network implements the forward pass in training mode (batch statistics, biased variance) and inference
mode (running statistics), the MSE loss (mean over every element), its analytic backward (BN through
``bnsuite.adapters.reference.backward_train``), the plain SGD step and the running-statistic update with a given estimator.
It also propagates absolute magnitudes (|W| |x| sums) through the same computation, which the network tolerances in
``suites/tolerances/`` (networks section) scale by the unit roundoff.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bnsuite.adapters import reference as ref
from bnsuite.adapters.dtypes import representable

ARCHS = ("conv_bn_relu_dense", "bn_stack")
IN_CHANNELS = 3
OUT_FEATURES = 4
STACK_BLOCKS = 20
GROWTH = 4
IMAGE = (6, 6)


def plan(arch: str) -> list[tuple]:
    """Ops: ("conv", name, cin, cout, k), ("bn", name, c), ("relu",), ("gap",), ("dense", name, cin, cout),
    ("block", name, cin, growth) = concat(h, conv1x1 name.conv (relu (bn name.bn (h))))."""
    if arch == "conv_bn_relu_dense":
        return [("conv", "conv", IN_CHANNELS, 8, 3), ("bn", "bn", 8), ("relu",), ("gap",),
                ("dense", "dense", 8, OUT_FEATURES)]
    if arch == "bn_stack":
        ops: list[tuple] = [("block", f"block{i:02d}", IN_CHANNELS + GROWTH * i, GROWTH) for i in range(STACK_BLOCKS)]
        c = IN_CHANNELS + GROWTH * STACK_BLOCKS
        return ops + [("bn", "final_bn", c), ("relu",), ("gap",), ("dense", "dense", c, OUT_FEATURES)]
    raise ValueError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHS)}")


def bn_names(arch: str) -> list[str]:
    """BatchNorm layer names in forward order (the order of ``bn_states()``)."""
    out = []
    for op in plan(arch):
        if op[0] == "bn":
            out.append(op[1])
        elif op[0] == "block":
            out.append(f"{op[1]}.bn")
    return out


def param_names(arch: str) -> list[str]:
    """Trainable parameter keys (conv/dense kernels and biases, BN scale/offset), forward order."""
    out = []
    for op in plan(arch):
        if op[0] in ("conv", "dense"):
            out += [f"{op[1]}.kernel", f"{op[1]}.bias"]
        elif op[0] == "bn":
            out += [f"{op[1]}.scale", f"{op[1]}.offset"]
        elif op[0] == "block":
            out += [f"{op[1]}.bn.scale", f"{op[1]}.bn.offset", f"{op[1]}.conv.kernel", f"{op[1]}.conv.bias"]
    return out


def _round(a, dtype: str) -> np.ndarray:
    return representable(a, dtype)  # the test data's rounding too, so the oracle sees what frameworks see


def init_weights(arch: str, seed: int = 0, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Seeded weights in the canonical layout, rounded to `dtype`; BN state is non-trivial (scale != 1, offset != 0,
    running statistics != their initial values) so a swapped or reset piece shows."""
    rng = np.random.default_rng(seed)
    w: dict[str, np.ndarray] = {}

    def conv(name, cin, cout, k):
        w[f"{name}.kernel"] = rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
        w[f"{name}.bias"] = rng.uniform(-0.2, 0.2, cout)

    def bn(name, c):
        w[f"{name}.scale"] = rng.uniform(0.5, 1.5, c)
        w[f"{name}.offset"] = rng.uniform(-0.5, 0.5, c)
        w[f"{name}.mean"] = rng.uniform(-0.5, 0.5, c)
        w[f"{name}.var"] = rng.uniform(0.5, 2.0, c)

    for op in plan(arch):
        if op[0] == "conv":
            conv(op[1], op[2], op[3], op[4])
        elif op[0] == "bn":
            bn(op[1], op[2])
        elif op[0] == "dense":
            w[f"{op[1]}.kernel"] = rng.standard_normal((op[3], op[2])) * np.sqrt(1.0 / op[2])
            w[f"{op[1]}.bias"] = rng.uniform(-0.2, 0.2, op[3])
        elif op[0] == "block":
            bn(f"{op[1]}.bn", op[2])
            conv(f"{op[1]}.conv", op[2], op[3], 1)
    return {k: _round(v, dtype) for k, v in w.items()}


def stack_stats_like_data(weights: dict, x: np.ndarray, channels_last: bool, eps: float, *, seed: int = 3,
                          dtype: str = "float32") -> dict[str, np.ndarray]:
    """Running statistics near (not equal to) the statistics each BN of the net sees on `x` (training-mode pass),
    so a deep network in inference mode keeps sane activations. Returns new weights."""
    net = ReferenceNet("bn_stack", weights, channels_last=channels_last, eps=eps, momentum=1.0, estimator="biased")
    net.forward(x, training=True)  # momentum 1: running stats := batch stats
    rng = np.random.default_rng(seed)
    out = dict(weights)
    for name in bn_names("bn_stack"):
        c = len(weights[f"{name}.mean"])
        out[f"{name}.mean"] = _round(net.w[f"{name}.mean"] + rng.uniform(-0.1, 0.1, c), dtype)
        out[f"{name}.var"] = _round(net.w[f"{name}.var"] * rng.uniform(0.8, 1.25, c), dtype)
    return out


# -- float64 ops, NCHW -----------------------------------------------------------------------------------------------
def _patches(x: np.ndarray, k: int):
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    h, w = x.shape[2:]
    return [(i, j, xp[:, :, i:i + h, j:j + w]) for i in range(k) for j in range(k)]


def conv2d(x, kernel, bias):
    """'same' convolution (stride 1, odd k), NCHW, kernel (out, in, kh, kw)."""
    k = kernel.shape[-1]
    out = sum(np.einsum("nchw,oc->nohw", xs, kernel[:, :, i, j]) for i, j, xs in _patches(x, k))
    return out + bias.reshape(1, -1, 1, 1)


def conv2d_backward(x, kernel, dz):
    """(dx, dkernel, dbias) of sum(z * dz)."""
    k = kernel.shape[-1]
    p = k // 2
    dk = np.zeros_like(kernel)
    h, w = x.shape[2:]
    dxp = np.zeros((x.shape[0], x.shape[1], h + 2 * p, w + 2 * p))
    for i, j, xs in _patches(x, k):
        dk[:, :, i, j] = np.einsum("nohw,nchw->oc", dz, xs)
        dxp[:, :, i:i + h, j:j + w] += np.einsum("nohw,oc->nchw", dz, kernel[:, :, i, j])
    return dxp[:, :, p:p + h, p:p + w], dk, dz.sum(axis=(0, 2, 3))


def _bn_cache(x, scale, eps):
    m = ref.moments(x, 1)
    sigma = np.sqrt(m.var_biased + eps)
    xhat = (x - m.mean.reshape(1, -1, 1, 1)) / sigma.reshape(1, -1, 1, 1)
    return m, sigma, xhat


@dataclasses.dataclass
class Layer:
    """What one op saw in the last forward pass (for the backward, the tolerances and the tests)."""

    op: tuple
    x: np.ndarray  # input (NCHW or NC)
    y: np.ndarray  # output
    x_abs: np.ndarray  # |.|-propagated magnitude of the input
    y_abs: np.ndarray
    n: int  # length of the reduction this op performs per output value (0: elementwise)
    gain: float = 1.0  # relative error gain of a training-mode BN: 2 + max|xhat|
    xhat_max: float = 0.0


class ReferenceNet:
    """The float64 oracle network. Weights are a canonical dict; BN running statistics update on every
    training-mode forward with `momentum` (canonical, weight of the new statistic) and `estimator`."""

    def __init__(self, arch: str, weights: dict, *, channels_last: bool, eps: float, momentum: float,
                 estimator: str):
        self.arch = arch
        self.ops = plan(arch)
        self.w = {k: np.array(v, np.float64) for k, v in weights.items()}
        self.channels_last = channels_last
        self.eps = eps
        self.momentum = momentum
        self.estimator = estimator
        self.layers: list[Layer] = []
        self.grads: dict[str, np.ndarray] = {}
        self.grads_abs: dict[str, np.ndarray] = {}

    # -- layout ---------------------------------------------------------------------------------------------------------
    def _nchw(self, x):
        x = np.asarray(x, np.float64)
        return np.moveaxis(x, -1, 1) if self.channels_last else x

    # -- forward --------------------------------------------------------------------------------------------------------
    def _bn(self, name, h, h_abs, training, update):
        g, b = self.w[f"{name}.scale"], self.w[f"{name}.offset"]
        rs = lambda v: v.reshape(1, -1, 1, 1)
        if training:
            m, sigma, xhat = _bn_cache(h, g, self.eps)
            y = rs(g) * xhat + rs(b)
            y_abs = rs(np.abs(g)) * np.abs(xhat) + rs(np.abs(b))
            if update:
                self.w[f"{name}.mean"], self.w[f"{name}.var"] = ref.update_running(
                    self.w[f"{name}.mean"], self.w[f"{name}.var"], m, self.momentum, self.estimator, step=1)
            xm = float(np.max(np.abs(xhat)))
            return y, y_abs, m.n, 2.0 + xm, xm
        mean, var = self.w[f"{name}.mean"], self.w[f"{name}.var"]
        y = ref.forward_inference(h, g, b, mean, var, self.eps, 1)
        y_abs = rs(np.abs(g) / np.sqrt(var + self.eps)) * (h_abs + rs(np.abs(mean))) + rs(np.abs(b))
        return y, y_abs, 0, 1.0, 0.0

    def _run(self, x, training: bool, update: bool) -> np.ndarray:
        h = self._nchw(x)
        h_abs = np.abs(h)
        self.layers = []
        for op in self.ops:
            kind = op[0]
            if kind == "conv":
                k = self.w[f"{op[1]}.kernel"]
                y, y_abs = conv2d(h, k, self.w[f"{op[1]}.bias"]), conv2d(h_abs, np.abs(k),
                                                                        np.abs(self.w[f"{op[1]}.bias"]))
                self.layers.append(Layer(op, h, y, h_abs, y_abs, op[2] * op[4] ** 2 + 1))
            elif kind == "bn":
                y, y_abs, n, gain, xm = self._bn(op[1], h, h_abs, training, update)
                self.layers.append(Layer(op, h, y, h_abs, y_abs, n, gain, xm))
            elif kind == "relu":
                y, y_abs = np.maximum(h, 0.0), h_abs
                self.layers.append(Layer(op, h, y, h_abs, y_abs, 0))
            elif kind == "gap":
                y, y_abs = h.mean(axis=(2, 3)), h_abs.mean(axis=(2, 3))
                self.layers.append(Layer(op, h, y, h_abs, y_abs, h.shape[2] * h.shape[3]))
            elif kind == "dense":
                k, bias = self.w[f"{op[1]}.kernel"], self.w[f"{op[1]}.bias"]
                y, y_abs = h @ k.T + bias, h_abs @ np.abs(k).T + np.abs(bias)
                self.layers.append(Layer(op, h, y, h_abs, y_abs, op[2] + 1))
            elif kind == "block":
                name = op[1]
                a, a_abs, n, gain, xm = self._bn(f"{name}.bn", h, h_abs, training, update)
                self.layers.append(Layer(("bn", f"{name}.bn", op[2]), h, a, h_abs, a_abs, n, gain, xm))
                r = np.maximum(a, 0.0)
                self.layers.append(Layer(("relu",), a, r, a_abs, a_abs, 0))
                k, bias = self.w[f"{name}.conv.kernel"], self.w[f"{name}.conv.bias"]
                c, c_abs = conv2d(r, k, bias), conv2d(a_abs, np.abs(k), np.abs(bias))
                self.layers.append(Layer(("conv", f"{name}.conv", op[2], op[3], 1), r, c, a_abs, c_abs, op[2] + 1))
                y, y_abs = np.concatenate([h, c], axis=1), np.concatenate([h_abs, c_abs], axis=1)
                self.layers.append(Layer(("concat",), h, y, h_abs, y_abs, 0))
            else:  # pragma: no cover
                raise ValueError(kind)
            h, h_abs = y, y_abs
        return h

    def forward(self, x, training: bool) -> np.ndarray:
        """Output (N, 4). training=True normalizes with batch statistics AND updates the running statistics."""
        return self._run(x, training, update=training)

    # -- loss and backward ----------------------------------------------------------------------------------------------
    @staticmethod
    def loss(y, target) -> float:
        return float(np.mean((np.asarray(y, np.float64) - np.asarray(target, np.float64)) ** 2))

    def _backward_net(self, dy, absolute: bool) -> dict[str, np.ndarray]:
        """Gradients of sum(y * dy) for the last forward pass (training mode); absolute=True runs the same chain with
        every factor replaced by its absolute value (the magnitudes roundoff bounds scale with). At a DenseNet
        concatenation the gradient of h reaches h both directly and
        through the block."""
        grads: dict[str, np.ndarray] = {}
        layers = self.layers
        d = dy
        i = len(layers) - 1
        while i >= 0:
            lay = layers[i]
            if lay.op[0] == "concat":
                # block = layers[i-3 : i+1]: bn, relu, conv, concat
                c = lay.x.shape[1]
                skip, d_block = d[:, :c], d[:, c:]
                bn_l, relu_l, conv_l = layers[i - 3], layers[i - 2], layers[i - 1]
                sub = self._chain([bn_l, relu_l, conv_l], d_block, absolute, grads)
                d = skip + sub
                i -= 4
                continue
            d = self._chain([lay], d, absolute, grads)
            i -= 1
        return grads

    def _chain(self, layers, d, absolute, grads):
        saved = self.layers
        self.layers = layers
        try:
            g = self._backward_inner(d, absolute)
        finally:
            self.layers = saved
        d_out = g.pop("__dx__")
        grads.update(g)
        return d_out

    def _backward_inner(self, d, absolute):
        A = np.abs if absolute else (lambda v: v)
        grads = {}
        for lay in reversed(self.layers):
            kind = lay.op[0]
            if kind == "dense":
                k = self.w[f"{lay.op[1]}.kernel"]
                grads[f"{lay.op[1]}.kernel"] = d.T @ A(lay.x)
                grads[f"{lay.op[1]}.bias"] = d.sum(axis=0)
                d = d @ A(k)
            elif kind == "gap":
                hw = lay.x.shape[2] * lay.x.shape[3]
                d = np.broadcast_to(d[:, :, None, None], lay.x.shape) / hw
            elif kind == "relu":
                d = d * (lay.x > 0)
            elif kind == "bn":
                name = lay.op[1]
                g = self.w[f"{name}.scale"]
                if absolute:
                    _, sigma, xhat = _bn_cache(lay.x, g, self.eps)
                    rs = lambda v: v.reshape(1, -1, 1, 1)
                    ax = (0, 2, 3)
                    n = lay.n
                    grads[f"{name}.scale"] = (d * np.abs(xhat)).sum(axis=ax)
                    grads[f"{name}.offset"] = d.sum(axis=ax)
                    d = rs(np.abs(g) / sigma) * (d + rs(d.sum(axis=ax) / n)
                                                 + np.abs(xhat) * rs(grads[f"{name}.scale"] / n))
                else:
                    d, grads[f"{name}.scale"], grads[f"{name}.offset"] = ref.backward_train(lay.x, d, g, self.eps, 1)
            elif kind == "conv":
                name = lay.op[1]
                d, grads[f"{name}.kernel"], grads[f"{name}.bias"] = conv2d_backward(
                    A(lay.x), A(self.w[f"{name}.kernel"]), d)
            else:  # pragma: no cover
                raise ValueError(kind)
        grads["__dx__"] = d
        return grads

    def gradients(self, x, target) -> tuple[float, dict[str, np.ndarray]]:
        """Loss and gradients of the MSE loss in training mode, WITHOUT touching weights or running statistics."""
        y = self._run(x, training=True, update=False)
        t = np.asarray(target, np.float64)
        dy = 2.0 * (y - t) / y.size
        self.grads = self._backward_net(dy, absolute=False)
        self.grads_abs = self._backward_net(np.abs(dy), absolute=True)
        return self.loss(y, t), self.grads

    def sgd_step(self, x, target, lr: float) -> float:
        """One plain SGD step: loss (before the update), gradients, w <- w - lr * g for every trainable parameter;
        the running statistics update with the batch statistics this step's forward pass saw."""
        loss, grads = self.gradients(x, target)
        self._run(x, training=True, update=True)  # same weights: updates the running statistics
        for k, g in grads.items():
            self.w[k] = self.w[k] - lr * g
        return loss

    # -- state ----------------------------------------------------------------------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.w.items()}

    def bn_states(self):
        from bnsuite.adapters.base import State

        return [State(self.w[f"{n}.scale"].copy(), self.w[f"{n}.offset"].copy(), self.w[f"{n}.mean"].copy(),
                      self.w[f"{n}.var"].copy()) for n in bn_names(self.arch)]
