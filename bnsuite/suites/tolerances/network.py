"""Tolerances for whole networks (adapters/nets) against the float64 reference network; tests reach them through the
package (`tolerances`, tl.*).

Derivation
----------
Notation as in the package docstring (suites/tolerances/__init__.py): u = unit roundoff of the dtype, n = length of a
reduction. A layer that sums n products computes the exact result of relatively perturbed inputs (|perturbation| <=
gamma_n ~ n u, Higham 2nd ed. section 3.1), so its absolute error is at most (n + c) u times the sum of the ABSOLUTE
products, |W| |x| (+|b|), not the (possibly cancelling) result. The reference network propagates these absolute
magnitudes through the same graph (``Layer.y_abs``; for the backward ``ReferenceNet.grads_abs``), and every bound below
is a relative error rho times such a magnitude.

* Forward, relative error of the output (to first order, layer errors add):
      rho_f = u * G_f * sum_l c_l,   c_l = n_l + 4 (conv: n = C_in k^2 + 1, dense: C_in + 1, pooling: H W),
                                           c_l = (n_l + 4) kappa_l for a training-mode BN (n_l = values per
                                           channel, kappa_l = 1 + max mean^2/var: one-pass variance, see
                                           core.batch_var_rel), c_l = 8 for an inference-mode BN (a fixed
                                           per-channel affine map, core.bn_output),
  G_f = prod over training-mode BN of (2 + max|xhat|). That gain is the BN forward's sensitivity: an input error e
  moves the mean by <= e, sigma by <= e, so the output by <= |gamma| e (2 + |xhat|) / sigma; |gamma| |xhat| is the
  output's magnitude, so relative errors grow by at most (2 + max|xhat|) per training-mode BN. Inference-mode BN is a
  linear map and costs nothing beyond its rounding. This bounds errors growing linearly with depth for the deep
  network (21 inference BNs), the assumption the package docstring states for stacked normalized layers.
* Loss L = mean((y - t)^2):  |dL| <= 2 max|y - t| e_y + (N + 4) u L, e_y = rho_f max(y_abs).
* Gradient of a parameter: the backward adds its own reductions (conv/dense: batch N H W for the weight gradient
  plus C_out k^2 for the input gradient; BN backward: n, with gain 2 + max|xhat|^2 from
  dx = gamma/sigma (dy - mean(dy) - xhat mean(dy xhat))) and sees the forward's errors through its inputs:
      rho_b = G_b (rho_f + u sum_l c'_l),   G_b = prod over training BN of (2 + max|xhat|^2);
  tolerance rho_b * max|grad_abs(P)|.
* k-th SGD step: earlier steps leave weights off by their own bound, which enters step k like one more step's
  rounding, so the relative bounds of step k are k times those of one step (linear in k, as
  core.running_stats assumes for EMA steps). A weight after K steps: sum_k (k lr rho_b(k) max|grad_abs(k)|
  + 2 u (max|P| + lr max|grad|)).
* Running statistics of a BN whose input carries e_x(k) = k rho_in max(x_abs) at step k (rho_in = rho_f of the layers
  before it): mean moves by m (e_x + (n + 2) u max|x|), variance by m (2 e_x mean|x - mu| + (n + 4) u kappa var)
  n/(n - 1), each step adds 2 u max|state| for the EMA arithmetic; (1 - m) <= 1 keeps earlier errors.
* Deep inference networks (``output_linear_in_depth``): the |W||x| magnitudes propagated from the INPUT grow
  geometrically through a deep stack (every conv and BN multiplies them), which makes the bound above vacuous for
  21 layers. There we use the assumption the package docstring states for stacked normalized layers, that errors
  compound at most linearly in depth: layer l adds a relative error rho_l = c_l u max(local_abs_l) / max|y_l|, with
  local_abs_l its own |W| |x_l| + |b| on its ACTUAL input (BN inference: |gamma| (|x| + |mean|) / sqrt(var + eps) +
  |beta|), and relative errors pass on with gain 1:  tolerance = sum_l rho_l * max|y|.
* Output of the same inference network at two batch sizes: each is within the bound of the exact output, so they
  differ by at most twice the bound (exactly 0 in exact arithmetic).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bnsuite.suites.tolerances.core import Tol, conditioning, roundoff, two_results_of_one_exact_value

def _c_fwd(lay) -> float:
    """The forward error constant c_l of one layer (see the derivation above)."""
    kind = lay.op[0]
    if kind in ("conv", "dense", "gap"):
        return lay.n + 4.0
    if kind == "bn":
        if lay.n == 0:  # inference mode
            return 8.0
        return (lay.n + 4.0) * conditioning(lay.x, 1)
    return 0.0


def _c_bwd(lay) -> float:
    kind = lay.op[0]
    if kind in ("conv", "dense"):
        x = lay.x
        batch = x.shape[0] * (x.shape[2] * x.shape[3] if x.ndim == 4 else 1)
        fan_out = lay.op[3] * (lay.op[4] ** 2 if kind == "conv" else 1)
        return batch + fan_out + 8.0
    if kind == "bn":
        return lay.n + 8.0
    if kind == "gap":
        return 4.0
    return 0.0


def net_forward_rel(layers, dtype: str) -> float:
    """rho_f of the given layers (see the module docstring)."""
    gain = float(np.prod([lay.gain for lay in layers if lay.op[0] == "bn" and lay.n > 0] or [1.0]))
    return roundoff(dtype) * gain * sum(_c_fwd(lay) for lay in layers)


def net_backward_rel(layers, dtype: str) -> float:
    gain = float(np.prod([2.0 + lay.xhat_max ** 2 for lay in layers if lay.op[0] == "bn" and lay.n > 0] or [1.0]))
    return gain * (net_forward_rel(layers, dtype) + roundoff(dtype) * sum(_c_bwd(lay) for lay in layers))


def net_output(layers, dtype: str, *, steps_before: int = 0) -> Tol:
    """Network output of the last reference forward pass (`layers`), after `steps_before` SGD steps."""
    rho = (1 + steps_before) * net_forward_rel(layers, dtype)
    y_abs = float(np.max(layers[-1].y_abs))
    depth = sum(1 for lay in layers if lay.op[0] in ("conv", "dense", "bn"))
    return Tol(atol=rho * y_abs, rtol=0.0,
               why=f"forward bound rho_f={rho:.3g} x max|y|_abs={y_abs:.3g} ({depth} conv/dense/BN layers, "
                   f"{steps_before} earlier steps; suites/tolerances/, networks)")


def net_output_linear_in_depth(net, dtype: str) -> Tol:
    """Output of the last reference forward pass in INFERENCE mode, errors linear in depth (module docstring)."""
    u = roundoff(dtype)
    rho = 0.0
    layers = net.layers
    for lay in layers:
        kind, c = lay.op[0], _c_fwd(lay)
        if c == 0.0:
            continue
        x = np.abs(lay.x)
        if kind == "conv":
            from bnsuite.adapters.nets.reference_net import conv2d

            local = conv2d(x, np.abs(net.w[f"{lay.op[1]}.kernel"]), np.abs(net.w[f"{lay.op[1]}.bias"]))
        elif kind == "dense":
            local = x @ np.abs(net.w[f"{lay.op[1]}.kernel"]).T + np.abs(net.w[f"{lay.op[1]}.bias"])
        elif kind == "bn":
            rs = lambda v: v.reshape(1, -1, 1, 1)
            name = lay.op[1]
            local = (rs(np.abs(net.w[f"{name}.scale"]) / np.sqrt(net.w[f"{name}.var"] + net.eps))
                     * (x + rs(np.abs(net.w[f"{name}.mean"]))) + rs(np.abs(net.w[f"{name}.offset"])))
        else:  # pooling
            local = x
        rho += c * u * float(np.max(local)) / max(float(np.max(np.abs(lay.y))), np.finfo(np.float64).tiny)
    y_max = float(np.max(np.abs(layers[-1].y)))
    n = sum(1 for lay in layers if _c_fwd(lay) > 0)
    return Tol(atol=rho * y_max, rtol=0.0,
               why=f"linear in depth: sum over {n} layers of c_l u max|local|/max|y_l| = {rho:.3g}, x max|y| "
                   f"{y_max:.3g} (suites/tolerances/network.py)")


def net_same_network_two_batch_sizes(tol_exact: Tol) -> Tol:
    """The same inference network at two batch sizes: exactly equal in exact arithmetic, each output within
    `tol_exact` of the exact one (module docstring, last point)."""
    return two_results_of_one_exact_value(tol_exact, "the same inference network at two batch sizes")


@dataclasses.dataclass
class NetTrainingBounds:
    """Accumulates the bounds of a sequence of SGD steps of the reference network (call `after_step` after each
    ReferenceNet.sgd_step)."""

    dtype: str
    lr: float
    momentum: float
    estimator: str
    steps: int = 0
    loss_tols: list = dataclasses.field(default_factory=list)
    param_err: dict = dataclasses.field(default_factory=dict)
    stat_err: dict = dataclasses.field(default_factory=dict)

    def after_step(self, net, loss: float, target) -> None:
        u = roundoff(self.dtype)
        self.steps += 1
        k = self.steps
        layers = net.layers
        rho_f = k * net_forward_rel(layers, self.dtype)
        y = layers[-1].y
        e_y = rho_f * float(np.max(layers[-1].y_abs))
        t = np.asarray(target, np.float64)
        self.loss_tols.append(Tol(
            atol=2 * float(np.max(np.abs(y - t))) * e_y + (y.size + 4) * u * loss, rtol=0.0,
            why=f"step {k}: 2 max|y-t| e_y + (N+4) u L, e_y = {e_y:.3g} (rho_f={rho_f:.3g})"))
        rho_b = k * net_backward_rel(layers, self.dtype)
        for name, g_abs in net.grads_abs.items():
            p = net.w[name]
            g = net.grads[name]
            e = self.lr * rho_b * float(np.max(g_abs)) + 2 * u * (float(np.max(np.abs(p))) + self.lr * float(
                np.max(np.abs(g))))
            self.param_err[name] = self.param_err.get(name, 0.0) + e
        m = self.momentum
        for i, lay in enumerate(layers):
            if lay.op[0] != "bn" or lay.n == 0:
                continue
            name, x, n = lay.op[1], lay.x, lay.n
            e_x = k * net_forward_rel(layers[:i], self.dtype) * float(np.max(lay.x_abs))
            mu = x.mean(axis=(0, 2, 3), keepdims=True)
            var = x.var(axis=(0, 2, 3))
            kappa = conditioning(x, 1)
            bessel = n / (n - 1) if self.estimator == "unbiased" else 1.0
            e_mean = m * (e_x + (n + 2) * u * float(np.max(np.abs(x)))) + 2 * u * float(np.max(np.abs(
                net.w[f"{name}.mean"])))
            e_var = m * bessel * (2 * e_x * float(np.max(np.abs(x - mu).mean(axis=(0, 2, 3))))
                                  + (n + 4) * u * kappa * float(np.max(var))) + 2 * u * float(np.max(net.w[f"{name}.var"]))
            self.stat_err[f"{name}.mean"] = self.stat_err.get(f"{name}.mean", 0.0) + e_mean
            self.stat_err[f"{name}.var"] = self.stat_err.get(f"{name}.var", 0.0) + e_var

    def loss(self, step: int) -> Tol:
        return self.loss_tols[step - 1]

    def weight(self, name: str) -> Tol:
        if name in self.param_err:
            return Tol(self.param_err[name], 0.0, f"{self.steps} SGD steps: sum_k k lr rho_b(k) max|grad_abs| + "
                                                  "2u(max|P| + lr max|g|) (suites/tolerances/network.py)")
        return Tol(self.stat_err[name], 0.0, f"{self.steps} EMA steps, m={self.momentum}: "
                                             "m (e_x + reduction bound) + 2u max|state| per step "
                                             "(suites/tolerances/network.py)")
