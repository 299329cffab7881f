"""NumPy float64 oracle for the blocks of ``bnsuite.adapters.blocks``: every layer's output, the BatchNorm running
statistics after a training step, binary cross-entropy and its gradient, and the variance-shift prediction of Li et
al. for Dropout.

Conventions (visible in the code): dense is ``x @ kernel.T + bias`` (kernel (units, in)); BatchNorm normalizes over
the batch axis with the biased variance and ``eps`` inside the square root (``bnsuite.adapters.reference``); inverted
Dropout multiplies the kept values by 1/q at training time (q = 1 - rate, the keep probability) and is the identity at
inference; the Dropout mask is an input of the oracle (the framework draws it; the suite reads it off the output).
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters import reference as bn_ref


def forward(ops, weights, x, *, training: bool, rate: float, eps: float, masks=None) -> list[np.ndarray]:
    """Every layer's output. `masks` holds one boolean keep-mask per dropout op (training mode only)."""
    h = np.asarray(x, np.float64)
    masks = list(masks or [])
    q = 1.0 - rate
    out = []
    for op in ops:
        if op[0] == "dense":
            h = h @ weights["dense.kernel"].T + weights["dense.bias"]
        elif op[0] == "bn":
            if training:
                h, _ = bn_ref.forward_train(h, weights["bn.scale"], weights["bn.offset"], eps, axis=-1)
            else:
                h = bn_ref.forward_inference(h, weights["bn.scale"], weights["bn.offset"], weights["bn.mean"],
                                             weights["bn.var"], eps, axis=-1)
        elif op[0] == "relu":
            h = np.maximum(h, 0.0)
        elif op[0] == "sigmoid":
            h = sigmoid(h)
        elif op[0] == "softmax":
            e = np.exp(h - h.max(axis=op[1], keepdims=True))
            h = e / e.sum(axis=op[1], keepdims=True)
        elif op[0] == "dropout":
            if training:
                h = np.where(masks.pop(0), h / q, 0.0)
        else:
            raise ValueError(f"unknown op {op!r}")
        out.append(h)
    return out


def bn_input(ops, outputs, x) -> np.ndarray:
    """The value the BatchNorm of a block normalizes (the output of the layer before it, or the block input)."""
    i = [op[0] for op in ops].index("bn")
    return np.asarray(x, np.float64) if i == 0 else outputs[i - 1]


def running_after_train(weights, bn_in, momentum: float, estimator: str) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm running mean and variance after one training step on `bn_in`."""
    return bn_ref.update_running(weights["bn.mean"], weights["bn.var"], bn_ref.moments(bn_in, axis=-1), momentum,
                                 estimator, step=1)


def sigmoid(z):
    z = np.asarray(z, np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def bce_and_grads(weights, x, target) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean binary cross-entropy of sigmoid(dense(x)) against `target` and its gradient w.r.t. the dense kernel and
    bias. The same for a loss on logits (dense output) and one on probabilities (sigmoid output): dL/dz = (p - t)/N."""
    x = np.asarray(x, np.float64)
    t = np.asarray(target, np.float64)
    z = x @ weights["dense.kernel"].T + weights["dense.bias"]
    p = sigmoid(z)
    # log(1 + e^-|z|) form: exact for large |z|
    loss = np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z))))
    dz = (p - t) / z.shape[0]
    return float(loss), dz.T @ x, dz.sum(axis=0)


# -- Dropout variance shift (Li, Chen, Hu, Yang: "Understanding the Disharmony between Dropout and Batch
# Normalization by Variance Shift", CVPR 2019) -------------------------------------------------------------------
def li_variance_shift(c: np.ndarray, v: np.ndarray, q: float) -> np.ndarray:
    """Li et al.'s Delta = Var_inference / Var_train of a unit after inverted Dropout with keep probability q.

    A unit X = a x / q, a ~ Bernoulli(q) independent of x, E[x] = c, Var[x] = v. Training:
    E[X^2] = (c^2 + v)/q, so Var_train = (c^2 + v)/q - c^2 = v/q + (1 - q)/q c^2. Inference (a = q, no scaling):
    Var_inference = v. The BatchNorm after the Dropout learns Var_train as its running variance and applies it at
    inference to data of variance v, so its inference output has Delta = v / (v/q + (1-q)/q c^2) times the variance
    it had in training (Delta = q when c = 0: the paper's "variance shift", section 3)."""
    return v / (v / q + (1.0 - q) / q * c * c)


def dropout_sample_variance(z: np.ndarray, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Expectation and standard error, over the Dropout masks, of the biased sample variance per column of
    Y = a z / q (a ~ Bernoulli(q) i.i.d., z fixed, n rows).

    With M1 = mean(Y), M2 = mean(Y^2), S = M2 - M1^2 and the moments of a/q (E = 1, Var = (1-q)/q),
    of a/q^2 (Var = (1-q)/q^3) and Cov(a/q, a/q^2) = (1-q)/q^2:
        E[S]    = mean(z^2)/q - mean(z)^2 - mean(z^2)(1-q)/(q n)              (exact)
        Var[S] ~= Var M2 - 4 mean(z) Cov(M1, M2) + 4 mean(z)^2 Var M1         (delta method, first order)
    with Var M1 = sum z^2 (1-q)/(q n^2), Var M2 = sum z^4 (1-q)/(q^3 n^2), Cov = sum z^3 (1-q)/(q^2 n^2).
    E[S] is Li et al.'s v/q + (1-q)/q c^2 at the sample moments c, v of z, less the O(1/n) term of the biased
    estimator."""
    z = np.asarray(z, np.float64)
    n = z.shape[0]
    m1, m2 = z.mean(axis=0), (z * z).mean(axis=0)
    expected = m2 / q - m1 * m1 - m2 * (1.0 - q) / (q * n)
    var_m1 = (z ** 2).sum(axis=0) * (1.0 - q) / (q * n * n)
    var_m2 = (z ** 4).sum(axis=0) * (1.0 - q) / (q ** 3 * n * n)
    cov = (z ** 3).sum(axis=0) * (1.0 - q) / (q * q * n * n)
    var_s = np.maximum(var_m2 - 4.0 * m1 * cov + 4.0 * m1 * m1 * var_m1, 0.0)
    return expected, np.sqrt(var_s)
