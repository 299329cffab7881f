"""A sigmoid or softmax on a single output before binary cross-entropy.

A softmax over ONE unit is the constant 1: its gradient is exactly zero, so the network cannot learn (one step of
the framework's SGD leaves every weight bit-identical), unless the framework's loss reads the softmax's input as
logits (declared per framework: then it trains a sigmoid that the model's own output never applies), or unless the
loss's gradient at a probability of exactly 1 is NaN (declared per loss: one step then makes every weight NaN). A
softmax over
the wrong axis (the batch axis) mixes the samples of a batch: outputs change with the batch size, and bnsuite.probe
names that layer. The losses each framework offers for binary cross-entropy are declared with what they take (logits
or probabilities) and checked by one SGD step each: loss and gradient equal the oracle's for that input; at a
probability of exactly 1 (a saturated sigmoid) each loss on probabilities keeps the weights finite or not, as declared.
"""

import numpy as np
import pytest

from bnsuite.adapters.base import Unsupported
from bnsuite.adapters.blocks import BlockSpec
from bnsuite.adapters.blocks import reference as bref
from bnsuite.probe import core as probe
from bnsuite.suites import block_layers as bl
from bnsuite.suites import checks as ch
from bnsuite.suites import data
from bnsuite.suites import tolerances as tl

N, IN = 16, 5
LR = 0.5


def _targets(dtype: str) -> np.ndarray:
    return data.representable(np.random.default_rng(5).integers(0, 2, (N, 1)), dtype)


def test_softmax_over_one_unit(case, rec):
    spec = BlockSpec("dense_softmax_1", IN, dtype=case.dtype, device=case.device)
    w = bl.weights(spec)
    blk = bl.build(case, rec, spec, w)
    decl = blk.declaration
    x = bl.inputs(N, IN, case.dtype)
    outs = blk.forward(x, training=True)
    bl.check_layers(case, rec, spec, w, x, outs, True, {"block": spec.kind})
    y = outs[-1]
    ch.equal(rec, "softmax_one_unit_output", "all exactly 1.0",
             "all exactly 1.0" if np.all(y == 1.0) else f"values in [{y.min():.9g}, {y.max():.9g}]",
             source="softmax(z)_i = exp(z_i) / sum_j exp(z_j) over one unit is exp(z)/exp(z) = 1")
    declared = decl.one_unit_softmax_bce
    t = _targets(case.dtype)
    for loss in decl.bce_losses.value:  # the output is constant: every loss on it has zero gradient
        want = declared.value if isinstance(declared.value, str) else declared.value[loss]
        if not all(np.isfinite(v).all() for v in blk.weights().values()):  # a NaN step of the loss before
            blk = bl.build(case, rec, spec, w)
        w0 = blk.weights()
        _, gk, gb = bref.bce_and_grads(w0, x, t)
        blk.sgd_step(x, t, loss, LR)
        w1 = blk.weights()
        keys = ("dense.kernel", "dense.bias")
        change = max(float(np.max(np.abs(w1[k] - w0[k]))) for k in keys)
        g_obs = np.concatenate([((w0[k] - w1[k]) / LR).ravel() for k in keys])
        w_all0, w_all1 = (np.concatenate([w[k].ravel() for k in keys]) for w in (w0, w1))
        tol = tl.sgd_recovered_gradient(x, w_all0, w_all1, LR, case.dtype)
        observed = "nan" if not np.isfinite(w_all1).all() else "zero" if change == 0.0 else ch.classify(
            g_obs, {"sigmoid-of-its-input": np.concatenate([gk.ravel(), gb])}, tol)
        ch.equal(rec, "softmax_one_unit_bce_gradient", want, observed, max_abs_err=change,
                 extra={"loss": loss}, source=declared.source)


def test_declared_bce_losses(case, rec):
    """Each declared binary cross-entropy, on the input it is declared to take, gives the oracle's loss and gradient
    after one SGD step: a loss declared to take logits that takes probabilities (or the reverse) fails here."""
    decl = bl.declaration(case)
    x = bl.inputs(N, IN, case.dtype)
    t = _targets(case.dtype)
    for loss, takes in decl.bce_losses.value.items():
        kind = "dense_logits_1" if takes == "logits" else "dense_sigmoid_1"
        spec = BlockSpec(kind, IN, dtype=case.dtype, device=case.device)
        w = bl.weights(spec)
        blk = bl.build(case, rec, spec, w)
        extra = {"loss": loss, "takes": takes}
        loss_ref, gk, gb = bref.bce_and_grads(w, x, t)
        z = x @ w["dense.kernel"].T + w["dense.bias"]
        try:
            value = blk.sgd_step(x, t, loss, LR)
        except Unsupported as e:
            pytest.skip(f"{case.adapter.id}: {e}")
        except Exception as e:  # a loss fed the wrong kind of input may raise: that is the declaration failing
            ch.equal(rec, "bce_loss_value", f"{loss} takes {takes}", f"raised {type(e).__name__}: {e}"[:300],
                     source=decl.bce_losses.source, extra=extra)
            continue
        w1 = blk.weights()
        ch.close(rec, "bce_loss_value", value, loss_ref, tl.bce_loss(z, case.dtype),
                 declared=f"oracle BCE ({loss} takes {takes})", source=decl.bce_losses.source, extra=extra)
        g_obs = np.concatenate([((w["dense.kernel"] - w1["dense.kernel"]) / LR).ravel(),
                                (w["dense.bias"] - w1["dense.bias"]) / LR])
        g_ref = np.concatenate([gk.ravel(), gb])
        w_all0 = np.concatenate([w["dense.kernel"].ravel(), w["dense.bias"]])
        w_all1 = np.concatenate([w1["dense.kernel"].ravel(), w1["dense.bias"]])
        ch.close(rec, "bce_loss_gradient", g_obs, g_ref, tl.sgd_recovered_gradient(x, w_all0, w_all1, LR, case.dtype),
                 declared=f"oracle dBCE/dW ({loss} takes {takes})", source=decl.bce_losses.source, extra=extra)


SATURATING_SHIFT = 40.0  # added to the dense bias: logits near 40, whose sigmoid rounds to exactly 1.0 in every dtype


def test_bce_at_probability_one(case, rec):
    """Each declared loss taking probabilities, fed a sigmoid that is exactly 1.0 on every sample (half the targets 0):
    whether the loss and one SGD step keep the weights finite, as torch's BCELoss does (it clamps its log at -100:
    'we can always have a finite loss value and a linear backward method'), or turn them NaN or infinite."""
    decl = bl.declaration(case)
    declared = decl.bce_at_probability_one
    if "probabilities" not in decl.bce_losses.value.values():
        pytest.skip(f"{case.adapter.id}: no declared binary cross-entropy takes probabilities")
    if declared is None:
        pytest.skip(f"{case.adapter.id}: its blocks declare no bce_at_probability_one")
    spec = BlockSpec("dense_sigmoid_1", IN, dtype=case.dtype, device=case.device)
    w = bl.weights(spec, bias_shift=SATURATING_SHIFT)
    x = bl.inputs(N, IN, case.dtype)
    t = _targets(case.dtype)
    for loss, want in declared.value.items():
        blk = bl.build(case, rec, spec, w)
        p = blk.forward(x, training=True)[-1]
        value = blk.sgd_step(x, t, loss, LR)
        w1 = blk.weights()
        finite = all(np.isfinite(w1[k]).all() for k in ("dense.kernel", "dense.bias"))
        observed = (f"sigmoid output not exactly 1 (min {float(p.min())!r})" if not np.all(p == 1.0) else
                    "finite" if finite and np.isfinite(value) else "non-finite gradient" if np.isfinite(value) else
                    "non-finite loss" if finite else "non-finite loss and gradient")
        ch.equal(rec, "bce_at_probability_one", want, observed, extra={"loss": loss, "loss_value": f"{value:.6g}"},
                 source=declared.source)


def test_softmax_over_batch_axis(case, rec):
    """Inference outputs of a softmax over the batch axis change with the batch size (the same samples, split in
    two); a softmax over the unit axis does not."""
    x = bl.inputs(N, IN, case.dtype)
    thresh = probe.DEFAULT_TOL
    for kind, declared in (("softmax_over_batch", True), ("dense_softmax_1", False)):
        spec = BlockSpec(kind, IN, dtype=case.dtype, device=case.device)
        w = bl.weights(spec)
        blk = bl.build(case, rec, spec, w)
        full = blk.forward(x, training=False)
        bl.check_layers(case, rec, spec, w, x, full, False, {"block": kind})
        halves = np.concatenate([blk.forward(x[: N // 2], training=False)[-1],
                                 blk.forward(x[N // 2:], training=False)[-1]])
        rel = float(np.max(np.abs(halves - full[-1])) / np.max(np.abs(full[-1])))
        ch.equal(rec, "softmax_batch_size_dependence", declared, rel > thresh, max_abs_err=rel,
                 extra={"block": kind, "relative_change": rel, "threshold": thresh},
                 source="a softmax normalizes over its axis: over the batch axis every output depends on every "
                        "sample (bnsuite/probe/core.py: relative-change threshold)")


def test_probe_names_softmax_over_batch(case, rec):
    """bnsuite.probe names the softmax over the batch axis as the first batch-dependent layer, and finds a softmax
    over the unit axis invariant."""
    x = bl.inputs(N, IN, case.dtype)
    for kind in ("softmax_over_batch", "dense_softmax_1"):
        spec = BlockSpec(kind, IN, dtype=case.dtype, device=case.device)
        blk = bl.build(case, rec, spec, bl.weights(spec))
        try:
            model = blk.probe_model()
        except Unsupported as e:
            pytest.skip(f"{case.adapter.id}: {e}")
        report = probe.find_batch_dependence(model, x)
        first = report.first
        if kind == "softmax_over_batch":
            observed = "a softmax layer" if first is not None and "softmax" in first.type.lower() else (
                f"{first.type} ({first.name})" if first is not None else "none: " + report.verdict)
            ch.equal(rec, "probe_names_softmax_over_batch", "a softmax layer", observed,
                     extra={"verdict": report.verdict}, source="bnsuite/probe/core.py: find_batch_dependence")
        else:
            ch.equal(rec, "probe_softmax_over_units_invariant", True, report.invariant,
                     extra={"verdict": report.verdict}, source="bnsuite/probe/core.py: find_batch_dependence")
