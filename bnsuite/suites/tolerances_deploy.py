"""Tolerances of the deploy lane: an exported model run in a runtime, against the float64 oracle and against the
framework's own output.

Derivation
----------
* Floating-point runtimes. A runtime computes in a precision p that it reports (ONNX Runtime's CPU kernels and ONNX's
  reference evaluator in float32; OpenVINO's CPU plugin in its INFERENCE_PRECISION_HINT, bfloat16 on CPUs with
  bfloat16 units; a LiteRT float16 model stores its weights in float16). The exported weights and inputs are the
  framework's float32 values, which the oracle reads back exactly, so the only errors are the runtime's own roundings
  at its unit roundoff u_p (and the storage rounding of weights held at u_w): the bounds of suites/tolerances.py
  (``bn_output``: one layer, batch or running statistics) and suites/tolerances/network.py (``net_output`` for batch
  statistics, ``net_output_linear_in_depth`` for running statistics), evaluated at u = max(u_p, u_w). A runtime that
  folds BatchNorm into the convolution (ONNX Runtime's ConvBNFusion, OpenVINO's and TensorFlow's converters) computes
  w' = w g / sqrt(var + eps) and b' = (b - mean) g / sqrt(var + eps) + beta once: a few more roundings per weight,
  which the per-layer constant c_l (n + 4 for a convolution) already covers.
* Against the framework's own float32 output: both are within their bound of the exact value, so they differ by at
  most the sum (``tolerances.difference_of_outputs``).
* Running statistics a runtime returns in training mode: one EMA step from the exported state, the bound of
  ``tolerances.running_stats`` at float32.
* int8 post-training quantization (LiteRT, a representative dataset that covers the inputs checked): every int8
  tensor t holds round(v / s_t) with step s_t = range_t / 255 (activations, asymmetric over [min(0, lo), max(0, hi)])
  or max|v| / 127 (weights, symmetric per output channel), so it adds at most s_t / 2 where it is rounded; that error
  reaches the output multiplied by the gains after it (for a per-channel affine map |m|, for a convolution or dense
  layer the largest absolute row sum of its folded kernel, 1 for ReLU and pooling). The bound is the sum over the
  quantized tensors of s_t / 2 times its gain to the output, plus the float32 bound.
"""

from __future__ import annotations

import numpy as np

from bnsuite.suites import tolerances as tol
from bnsuite.suites.tolerances import Tol

# Precision names as runtimes report them -> the dtype whose unit roundoff applies.
PRECISIONS = {"float32": "float32", "f32": "float32", "fp32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
              "f16": "float16", "fp16": "float16", "float16": "float16"}


def compute_dtype(*precisions: str) -> str:
    """The coarsest of the named precisions (a runtime's compute precision, a format's weight storage)."""
    dtypes = []
    for p in precisions:
        key = str(p).lower().replace("<type: '", "").replace("'>", "")
        if key not in PRECISIONS:
            raise ValueError(f"no unit roundoff known for the runtime precision {p!r}")
        dtypes.append(PRECISIONS[key])
    return max(dtypes, key=tol.roundoff)


def layer_vs_oracle(x: np.ndarray, y_ref: np.ndarray, w: dict, eps: float, *, dtype: str, batch_stats: bool) -> Tol:
    """A lone BatchNorm (channels on axis 1 of `x`) in `dtype` against the float64 oracle."""
    return tol.bn_output(x, 1, y_ref, w["bn.scale"], eps, io_dtype=dtype,
                         normalize_var=None if batch_stats else w["bn.var"])


def net_vs_oracle(refnet, *, dtype: str, batch_stats: bool) -> Tol:
    """The network in `dtype` against the reference network's last forward (`refnet.layers` filled by it)."""
    from bnsuite.suites.tolerances import network as tn

    return tn.net_output(refnet.layers, dtype) if batch_stats else tn.net_output_linear_in_depth(refnet, dtype)


def vs_framework(runtime_vs_oracle: Tol, framework_vs_oracle: Tol) -> Tol:
    return tol.difference_of_outputs(runtime_vs_oracle, framework_vs_oracle)


def running_stats_step(x: np.ndarray, state_scale: float) -> Tol:
    """Running statistics after one training-mode run in a float32 runtime."""
    return tol.running_stats([x], 1, stats_dtype="float32", steps=1, state_scale=state_scale)


def _act_step(v: np.ndarray) -> float:
    lo, hi = min(0.0, float(np.min(v))), max(0.0, float(np.max(v)))
    return (hi - lo) / 255.0


def _weight_step(w: np.ndarray) -> float:
    """Largest per-output-channel step of a symmetric int8 weight (output channels on axis 0)."""
    w = np.asarray(w, np.float64).reshape(np.shape(w)[0], -1)
    return float(np.max(np.abs(w))) / 127.0


def int8_layer(x: np.ndarray, y_ref: np.ndarray, w: dict, eps: float) -> Tol:
    """A lone BatchNorm quantized to int8 (an affine map y = m x + c per channel, m = g / sqrt(var + eps)): the
    input's and output's steps, and m's and c's as int8 constants (module docstring)."""
    m = np.asarray(w["bn.scale"]) / np.sqrt(np.asarray(w["bn.var"]) + eps)
    c = np.asarray(w["bn.offset"]) - np.asarray(w["bn.mean"]) * m
    gain = float(np.max(np.abs(m)))
    s_x, s_y = _act_step(x), _act_step(y_ref)
    atol = (gain * s_x + s_y + float(np.max(np.abs(x))) * _weight_step(m[:, None])
            + _weight_step(c[:, None])) / 2
    base = layer_vs_oracle(x, y_ref, w, eps, dtype="float32", batch_stats=False)
    return Tol(atol=atol + base.atol, rtol=0.0,
               why=f"int8: half-steps of x ({s_x:.3g}) x |m| {gain:.3g}, y ({s_y:.3g}), and of m and c as int8 "
                   "constants, + the float32 bound (suites/tolerances_deploy.py)")


def int8_net(refnet, x_nchw: np.ndarray, w: dict, eps: float) -> Tol:
    """conv -> BN -> ReLU -> pool -> dense quantized to int8 after TensorFlow folds BN into the convolution: the
    half-steps of the input, the folded conv kernel, the conv/ReLU/pool activations, the dense kernel and the output,
    each carried by the gains after it (module docstring). `refnet` has just run the oracle's inference forward."""
    m = np.asarray(w["bn.scale"]) / np.sqrt(np.asarray(w["bn.var"]) + eps)
    k = np.asarray(w["conv.kernel"]) * m[:, None, None, None]  # the folded kernel (out, in, kh, kw)
    d = np.asarray(w["dense.kernel"])  # (out, in)
    g_conv = float(np.max(np.abs(k).reshape(k.shape[0], -1).sum(axis=1)))
    g_dense = float(np.max(np.abs(d).sum(axis=1)))
    acts = {lay.op[0]: lay.y for lay in refnet.layers}
    s_x, s_a, s_p, s_y = _act_step(x_nchw), _act_step(acts["bn"]), _act_step(acts["gap"]), _act_step(acts["dense"])
    x_window = float(np.max(np.abs(x_nchw))) * k.shape[1] * k.shape[2] * k.shape[3]
    e_a = s_a / 2 + g_conv * s_x / 2 + x_window * _weight_step(k) / 2
    e_p = s_p / 2 + e_a
    p_sum = float(np.max(np.abs(acts["gap"]))) * d.shape[1]
    e_y = s_y / 2 + g_dense * e_p + p_sum * _weight_step(d) / 2
    base = net_vs_oracle(refnet, dtype="float32", batch_stats=False)
    return Tol(atol=e_y + base.atol, rtol=0.0,
               why=f"int8: half-steps x {s_x:.3g}, conv {s_a:.3g}, pool {s_p:.3g}, y {s_y:.3g}, folded kernel and "
                   f"dense kernel, through gains conv {g_conv:.3g} and dense {g_dense:.3g}, + the float32 bound "
                   "(suites/tolerances_deploy.py)")
