"""Batch-size sensitivity of a deep network: a DenseNet-like stack with 21 BatchNorm layers in inference mode.

Inference BN is a fixed per-channel affine map, so the output of a sample must not depend on the batch it travels in;
only the kernels' choice of blocking (which can change with the batch size) may move it, within roundoff compounded by
depth. The same 128 samples go through at batch sizes 1, 2, 8, 32 and 128; the deviation from the full batch is
recorded as a curve, whether it is exactly zero is recorded, and both the deviation and the full-batch output (against
the float64 reference network) are checked within the depth-derived bounds of suites/tolerances/.
"""

import numpy as np

from bnsuite.suites import summaries
from bnsuite.adapters import nets
from bnsuite.adapters.nets.reference_net import IMAGE, IN_CHANNELS, stack_stats_like_data
from bnsuite.suites import checks as ch
from bnsuite.suites import tolerances as tl
from bnsuite.suites import data
from bnsuite.suites.networks import EPS, MOMENTUM, build

ARCH = "bn_stack"
FULL = 128
BATCH_SIZES = (1, 2, 8, 32, 128)
# Samples evaluated at the small batch sizes: each sample is compared with its own full-batch output, so a prefix
# measures the same thing with far fewer calls (16 calls at batch size 1 instead of 128).
PREFIX = 16
SUMMARY: list[dict] = []


def _inputs(dtype, channels_last, seed):
    rng = np.random.default_rng(data.seed_for(seed))
    x = rng.standard_normal((FULL, IN_CHANNELS, *IMAGE)) + rng.uniform(-1, 1, (1, IN_CHANNELS, 1, 1))
    x = data.representable(x, dtype)
    return np.moveaxis(x, 1, -1).copy() if channels_last else x


def test_deep_inference_batch_size(case, rec):
    cl = case.decl.default_channels_last.value
    # Running statistics near the statistics each BN sees (from another draw of the same distribution), so 21
    # inference-mode layers keep activations of order one.
    w0 = nets.init_weights(ARCH, seed=data.seed_for(1), dtype=case.dtype)
    w = stack_stats_like_data(w0, _inputs("float64", cl, 21), cl, EPS, dtype=case.dtype, seed=data.seed_for(3))
    net = build(case, ARCH, w, cl)
    rec.snippet = f"bnsuite.adapters.nets.build_network({case.adapter.id!r}, {ARCH!r}, ...)"
    x = _inputs(case.dtype, cl, 5)
    y_full = net.forward(x, training=False)
    outs = {FULL: y_full}
    for b in BATCH_SIZES:
        if b != FULL:
            n = max(PREFIX, b)
            outs[b] = np.concatenate([net.forward(x[i:i + b], training=False) for i in range(0, n, b)], axis=0)
    sizes = list(BATCH_SIZES)
    diff = {b: np.abs(outs[b] - y_full[:len(outs[b])]) for b in sizes}
    abs_dev = [float(diff[b].max()) for b in sizes]
    rel_dev = [float((diff[b] / np.maximum(np.abs(y_full[:len(diff[b])]), np.finfo(np.float64).tiny)).max())
               for b in sizes]

    refnet = nets.ReferenceNet(ARCH, w, channels_last=cl, eps=EPS, momentum=MOMENTUM, estimator="biased")
    y_ref = refnet.forward(x, training=False)
    tol_ref = tl.net_output_linear_in_depth(refnet, case.dtype)
    tol_bs = tl.net_same_network_two_batch_sizes(tol_ref)
    n_bn = len(nets.bn_names(ARCH))
    if rec.writer is not None:
        b_ = rec.base
        rec.writer.write("curve", name="deep_inference_deviation_vs_batch_size", adapter=b_["adapter"],
                         device=b_["device"], dtype=b_["dtype"], test=b_["test"], x=sizes, y=abs_dev,
                         xlabel="batch size", ylabel="max abs deviation", y_rel=rel_dev, bn_layers=n_bn,
                         atol=tol_bs.atol)
    exact = all(d == 0.0 for d in abs_dev)
    extra = {"batch_sizes": sizes, "max_abs_dev": abs_dev, "max_rel_dev": rel_dev, "bn_layers": n_bn, "arch": ARCH}
    rec.record("deep_inference_batch_size_exactly_invariant", declared="information, not asserted", observed=exact,
               passed=True, message="", max_abs_err=max(abs_dev), max_rel_err=max(rel_dev), **extra)
    SUMMARY.append({"adapter": case.adapter.id, "device": case.device, "dtype": case.dtype,
                    "dev": dict(zip(sizes, abs_dev)), "ref": float(np.max(np.abs(y_full - y_ref))),
                    "tol_bs": tol_bs.atol, "tol_ref": tol_ref.atol, "y_max": float(np.max(np.abs(y_ref)))})
    ch.close(rec, "deep_inference_batch_size_invariance", np.concatenate([outs[b].ravel() for b in sizes]),
             np.concatenate([y_full[:len(outs[b])].ravel() for b in sizes]), tol_bs, declared=f"output at batch size {FULL} (exact: identical)",
             extra=extra)
    ch.close(rec, "deep_inference_output_vs_reference", y_full, y_ref, tol_ref, declared="reference network",
             extra={"arch": ARCH, "bn_layers": n_bn})


def _line(r: dict) -> str:
    devs = "  ".join(f"b{b}:{d:.2g}" for b, d in r["dev"].items())
    return (f"  {r['adapter']:16s} {r['device']:4s} {devs}  (tol {r['tol_bs']:.2g}); vs reference "
            f"{r['ref']:.2g} (tol {r['tol_ref']:.2g}, max|y| {r['y_max']:.2g})")


summaries.register_rows(f"bnsuite: deep network ({ARCH}), inference deviation from batch {FULL}", SUMMARY, _line)
