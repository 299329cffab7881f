"""Inputs and options that break BatchNorm in production: an empty batch, NaN or inf in one channel, eps <= 0,
inference with large-magnitude inputs and extreme running statistics, masks, ghost batches (virtual_batch_size),
statistics over several axes, and Flax's use_running_average given at construction and at call.

What a framework does where frameworks legitimately differ (an error, NaN statistics, which samples form a ghost
batch, ...) is judged against each adapter's declared facts (its "edge_facts" capability, see
adapters/edge_facts.py); every number is judged against the float64 oracle, which also says where a NaN may go (its
own channel only). Options a framework lacks are optional adapter methods: Unsupported skips the case with its reason.
"""

import numpy as np
import pytest

from bnsuite.adapters import capabilities
from bnsuite.adapters import reference as ref
from bnsuite.adapters.base import BatchNormAdapter, State, Unsupported
from bnsuite.suites import checks as ch
from bnsuite.suites import data
from bnsuite.suites import tolerances as tl
from bnsuite.suites.cases import layout_id

EDGE_LAYOUTS = [(2, False), (4, True)]


def _declared(case, key: str):
    facts = capabilities.require(case.adapter, "edge_facts")
    if key not in facts:
        pytest.skip(f"{case.adapter.id} declares no edge-input fact {key!r} (its edge_facts table)")
    return facts[key]


def _needs(case, method: str, what: str) -> None:
    """Skip before building a layer when the adapter does not implement an optional method (building costs seconds
    on some frameworks); an implementation may still raise Unsupported for a particular request."""
    if getattr(case.adapter, method) is getattr(BatchNormAdapter, method):
        pytest.skip(f"{case.adapter.id}: {what} ({method} not implemented)")


def _error(e: Exception) -> str:
    return f"error:{type(e).__name__}"


def _stats_word(before: State, after: State) -> str:
    b = np.concatenate([before.mean, before.var])
    a = np.concatenate([after.mean, after.var])
    if np.array_equal(a, b):
        return "unchanged"
    if np.isnan(a).all():
        return "nan"
    return "changed"


def _pattern(v: np.ndarray) -> str:
    """How a per-channel value is non-finite: "nan", "inf", "-inf" or "finite"."""
    v = float(v)
    return "nan" if np.isnan(v) else "inf" if v == np.inf else "-inf" if v == -np.inf else "finite"


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("layout", EDGE_LAYOUTS, ids=layout_id)
def test_empty_batch(case, rec, layout, training):
    """N = 0: an error, or an empty output; and what the running statistics become."""
    declared = _declared(case, "empty_batch_training" if training else "empty_batch_inference")
    rank, channels_last = layout
    spec, bn, st, x = case.layer(rec, rank=rank, channels_last=channels_last)
    empty = x[:0]
    try:
        y = bn.forward(empty, training=training)
    except Exception as e:  # the framework refuses an empty batch
        observed = _error(e)
    else:
        out = "empty output" if y.shape == empty.shape else f"output shape {y.shape}"
        observed = f"{out}, running stats {_stats_word(st, bn.get_state())}"
    if training:
        ch.equal(rec, "empty_batch_training", declared.value, observed, source=declared.source,
                 extra={"layout": spec.layout})
    else:
        ch.equal(rec, "empty_batch_inference", declared.value, observed, source=declared.source,
                 extra={"layout": spec.layout})


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("layout", EDGE_LAYOUTS, ids=layout_id)
def test_nonfinite_in_one_channel(case, rec, layout, bad):
    """One NaN (or inf) in channel 0 of a training batch stays in channel 0: the other channels' outputs and running
    statistics equal the oracle's; channel 0's running statistics become what the oracle's do; inference afterwards
    on a clean batch is the oracle's with those statistics."""
    rank, channels_last = layout
    spec, bn, st, x = case.layer(rec, rank=rank, channels_last=channels_last)
    axis = spec.channel_axis
    x = x.copy()
    first = [0] * x.ndim
    first[axis] = 0
    x[tuple(first)] = bad
    clean = [c for c in range(spec.num_features) if c != 0]
    x_clean = np.take(x, clean, axis=axis)
    extra = {"layout": spec.layout, "value": str(bad)}

    y = bn.forward(x, training=True)
    with np.errstate(invalid="ignore"):  # inf - inf in the poisoned channel is the NaN under test
        y_ref, m = ref.forward_train(x, st.scale, st.offset, spec.eps, axis)
    tol = tl.bn_output(x_clean, axis, np.take(y_ref, clean, axis=axis), st.scale, spec.eps, io_dtype=spec.dtype)
    ch.close(rec, "nonfinite_stays_in_its_channel", y, y_ref, tol,
             declared="oracle: channel 0 all NaN, the others their batch-normalized values", extra=extra)

    after = bn.get_state()
    estimator = case.decl.estimator_for(bn.code_path(x.shape))
    o_mean, o_var = ref.update_running(st.mean, st.var, m, spec.momentum, estimator, 1)
    tol_rs = tl.running_stats([x_clean], axis, stats_dtype=spec.dtype, steps=1,
                              state_scale=float(np.max(np.abs(st.var))))
    ch.close(rec, "nonfinite_running_stats_other_channels", np.concatenate([after.mean[clean], after.var[clean]]),
             np.concatenate([o_mean[clean], o_var[clean]]), tol_rs, declared="oracle update of the clean channels",
             source=case.decl.running_var_estimator.source, extra=extra)
    ch.equal(rec, "nonfinite_poisoned_running_stats", f"mean {_pattern(o_mean[0])}, var {_pattern(o_var[0])}",
             f"mean {_pattern(after.mean[0])}, var {_pattern(after.var[0])}",
             source="adapters/reference.py: update_running of a non-finite batch moment", extra=extra)

    x2 = data.batch(spec, seed=5)
    y2 = bn.forward(x2, training=False)
    with np.errstate(invalid="ignore"):
        y2_ref = ref.forward_inference(x2, st.scale, st.offset, o_mean, o_var, spec.eps, axis)
    tol2 = tl.bn_output(np.take(x2, clean, axis=axis), axis, np.take(y2_ref, clean, axis=axis), st.scale, spec.eps,
                        io_dtype=spec.dtype, normalize_var=o_var[clean])
    ch.close(rec, "nonfinite_inference_afterwards", y2, y2_ref, tol2,
             declared="oracle inference with the poisoned running statistics (channel 0 NaN only)", extra=extra)


@pytest.mark.parametrize("eps", [0.0, -1e-3], ids=["eps0", "eps-negative"])
def test_nonpositive_eps(case, rec, eps):
    """eps = 0 or eps < 0: rejected, or accepted (then a constant channel, variance 0, gives NaN); where accepted,
    the other channels still equal the oracle with that eps."""
    declared = _declared(case, "eps_zero" if eps == 0 else "eps_negative")
    spec = case.spec(rank=4, channels_last=True, eps=eps)
    st = data.state(spec)
    x = data.batch(spec).copy()
    x[..., 0] = 0.0  # constant channel: mean and variance exactly 0 in any summation order
    y = None
    try:
        bn = case.build(spec)
        rec.snippet = bn.snippet()
        bn.set_state(st)
        y = bn.forward(x, training=True)
    except Exception as e:  # the framework rejects eps (at build or in the step)
        observed = _error(e)
    else:
        c0 = y[..., 0]
        word = ("nan" if np.isnan(c0).all() else "inf" if np.isinf(c0).all() else
                "offset" if np.allclose(c0, st.offset[0], rtol=0, atol=8 * tl.roundoff(spec.dtype)) else "other")
        observed = f"accepted, constant channel -> {word}"
    if eps == 0:
        ch.equal(rec, "eps_zero", declared.value, observed, source=declared.source)
    else:
        ch.equal(rec, "eps_negative", declared.value, observed, source=declared.source)
    if y is not None:
        y_ref, _ = ref.forward_train(x[..., 1:], st.scale[1:], st.offset[1:], eps, -1)
        tol = tl.bn_output(x[..., 1:], -1, y_ref, st.scale[1:], max(abs(eps), 1e-12), io_dtype=spec.dtype)
        ch.close(rec, "nonpositive_eps_other_channels", y[..., 1:], y_ref, tol,
                 declared=f"oracle with eps={eps} on the non-constant channels", extra={"eps": eps})


# Running statistics far from the usual: a variance below eps, a mean of 1e5 and 2e6, a variance of 1e8; inputs
# around the means; scales and offsets up to 1e3. Outputs reach |y| of 1e4 to 1e6.
EXTREME_MEAN = np.array([1.0e5, -2.0e6, 3.0])
EXTREME_VAR = np.array([1.0e-6, 4.0e-2, 1.0e8])
EXTREME_SCALE = np.array([1.5, -0.7, 1.0e3])
EXTREME_OFFSET = np.array([1.0e4, -2.0, 0.5])
EXTREME_SPREAD = np.array([3.0e2, 1.0e3, 5.0e6])  # input std per channel


@pytest.mark.parametrize("layout", EDGE_LAYOUTS, ids=layout_id)
def test_extreme_inference(case, rec, layout):
    """Inference where |y| reaches 1e4 and beyond: every output is still the oracle's (no overflow, no lost digit
    beyond the per-element rounding of a fixed affine map)."""
    rank, channels_last = layout
    spec = case.spec(rank=rank, channels_last=channels_last)
    bn = case.build(spec)
    rec.snippet = bn.snippet()
    r = lambda a: data.representable(a, spec.dtype)
    st = State(r(EXTREME_SCALE), r(EXTREME_OFFSET), r(EXTREME_MEAN), r(EXTREME_VAR))
    bn.set_state(st)
    axis = spec.channel_axis
    shape = [1] * rank
    shape[axis] = spec.num_features
    z = np.random.default_rng(11).standard_normal(data.shape_for(spec))
    x = r(EXTREME_MEAN.reshape(shape) + z * EXTREME_SPREAD.reshape(shape))
    y = bn.forward(x, training=False)
    y_ref = ref.forward_inference(x, st.scale, st.offset, st.mean, st.var, spec.eps, axis)
    for c in range(spec.num_features):
        xc, yc = np.take(x, [c], axis=axis), np.take(y_ref, [c], axis=axis)
        tol = tl.bn_output(xc, axis, yc, st.scale[c:c + 1], spec.eps, io_dtype=spec.dtype,
                           normalize_var=st.var[c:c + 1])
        ch.close(rec, "extreme_inference_output", np.take(y, [c], axis=axis), yc, tol,
                 declared="oracle inference", extra={"layout": spec.layout, "channel": c,
                                                     "max_abs_y": float(np.max(np.abs(yc)))})


# (rank, channels_last, channels): a padding mask over the positions, in both layouts, with several channels and one.
MASK_LAYOUTS = [(3, True, 3), (3, True, 1), (4, True, 3), (3, False, 3), (4, False, 3)]


def _mask_id(p) -> str:
    rank, channels_last, c = p
    return layout_id((rank, channels_last)) + ("-one-channel" if c == 1 else "")


def _masked_moments(x: np.ndarray, mask: np.ndarray, axis: int) -> ref.BatchMoments:
    """Batch moments over the positions where mask is True (the oracle of a masked BatchNorm)."""
    sel = np.moveaxis(x, axis, -1)[mask]  # (positions, C)
    return ref.moments(sel, -1)


@pytest.mark.parametrize("layout", MASK_LAYOUTS, ids=_mask_id)
def test_masked_batch_statistics(case, rec, layout):
    """A training step with a mask: are the batch statistics those of the unmasked positions (the oracle), those of
    every position (mask ignored), or an error? Where masked, the output at the unmasked positions is the oracle's."""
    _needs(case, "forward_masked", "no mask argument")
    rank, channels_last, channels = layout
    spec, bn, st, x = case.layer(rec, rank=rank, channels_last=channels_last, num_features=channels, momentum=1.0)
    axis = spec.channel_axis
    mask = np.random.default_rng(3).random(np.delete(np.array(x.shape), axis % x.ndim)) > 0.4
    try:
        y = bn.forward_masked(x, mask, training=True)
    except Unsupported:
        raise
    except Exception as e:  # the framework refuses this mask
        y, observed = None, _error(e)
    else:
        after = bn.get_state()
        got = np.concatenate([after.mean, after.var])
        masked, full = _masked_moments(x, mask, axis), ref.moments(x, axis)
        candidates = {f"{which} statistics, {est} variance": np.concatenate([m.mean, m.var(est)])
                      for which, m in (("masked", masked), ("unmasked", full)) for est in ("biased", "unbiased")}
        sel = np.moveaxis(x, axis, -1)[mask]
        tol = tl.running_stats([sel], -1, stats_dtype=spec.dtype, steps=1, state_scale=float(np.max(np.abs(st.var))))
        observed = ch.classify(got, candidates, tol)
    key = {(3, True, 3): "mask_NLC", (3, True, 1): "mask_NLC_one_channel", (4, True, 3): "mask_NHWC",
           (3, False, 3): "mask_NCL", (4, False, 3): "mask_NCHW"}[layout]
    declared = _declared(case, key)
    ch.equal(rec, "masked_batch_statistics", declared.value, observed, source=declared.source,
             extra={"layout": spec.layout, "channels": channels, "unmasked_positions": int(mask.sum())})
    if y is not None and observed.startswith("masked"):
        m = _masked_moments(x, mask, axis)
        y_ref = ref.normalize(x, m.mean, m.var_biased, st.scale, st.offset, spec.eps, axis)
        y_sel, ref_sel = np.moveaxis(y, axis, -1)[mask], np.moveaxis(y_ref, axis, -1)[mask]
        tol = tl.bn_output(sel, -1, ref_sel, st.scale, spec.eps, io_dtype=spec.dtype)
        ch.close(rec, "masked_training_output", y_sel, ref_sel, tol,
                 declared="oracle normalized with the statistics of the unmasked positions",
                 extra={"layout": spec.layout, "channels": channels})


def _grouped(x: np.ndarray, groups: list[np.ndarray], axis: int, eps: float):
    """Oracle of ghost batches: each group of samples normalized with its own batch statistics (scale 1, offset 0).
    Returns (y, moments of each group)."""
    y = np.empty_like(x, dtype=np.float64)
    ms = []
    for idx in groups:
        y[idx], m = ref.forward_train(x[idx], None, None, eps, axis)
        ms.append(m)
    return y, ms


@pytest.mark.parametrize("layout", EDGE_LAYOUTS, ids=layout_id)
def test_virtual_batch_size(case, rec, layout):
    """Ghost batches (virtual_batch_size): which samples are normalized together (contiguous blocks, strided
    samples, or the whole batch), and what running statistics one step keeps."""
    _needs(case, "rebuild_with_virtual_batch_size", "no virtual_batch_size option")
    rank, channels_last = layout
    spec = case.spec(rank=rank, channels_last=channels_last)
    bn = case.build(spec)
    x = data.batch(spec)
    n, vbs = x.shape[0], x.shape[0] // 2 if x.shape[0] > 4 else 2
    bn.rebuild_with_virtual_batch_size(vbs)
    rec.snippet = bn.snippet() + f"  # rebuilt with virtual_batch_size={vbs}"
    st = bn.get_state()  # the fresh layer's initial state
    declared = _declared(case, "virtual_batch_grouping")
    axis = spec.channel_axis
    k = n // vbs
    groupings = {"contiguous ghost batches": [np.arange(g * vbs, (g + 1) * vbs) for g in range(k)],
                 "strided ghost batches": [np.arange(b, n, k) for b in range(k)],
                 "whole batch": [np.arange(n)]}
    refs = {name: _grouped(x, groups, axis, spec.eps) for name, groups in groupings.items()}
    y = bn.forward(x, training=True)
    tol = max((tl.bn_output(x[g], axis, refs[name][0][g], None, spec.eps, io_dtype=spec.dtype)
               for name, groups in groupings.items() for g in groups), key=lambda t: t.atol)
    observed = ch.classify(y, {name: r[0] for name, r in refs.items()}, tol)
    ch.equal(rec, "virtual_batch_grouping", declared.value, observed, source=declared.source,
             extra={"layout": spec.layout, "virtual_batch_size": vbs, "batch": n})

    declared_rs = _declared(case, "virtual_batch_running_stats")
    ms = refs[observed][1] if observed in refs else refs["strided ghost batches"][1]
    whole = ref.moments(x, axis)
    mom = spec.momentum
    old_mean, old_var = st.mean.ravel(), st.var.ravel()
    cands = {f"mean of ghost-batch moments, {est}": (np.mean([m.mean for m in ms], 0),
                                                     np.mean([m.var(est) for m in ms], 0))
             for est in ("biased", "unbiased")}
    cands.update({f"whole-batch moments, {est}": (whole.mean, whole.var(est)) for est in ("biased", "unbiased")})
    cands = {name: np.concatenate([(1 - mom) * old_mean + mom * mu, (1 - mom) * old_var + mom * v])
             for name, (mu, v) in cands.items()}
    after = bn.get_state()
    tol_rs = tl.running_stats([x], axis, stats_dtype=spec.dtype, steps=1, state_scale=1.0)
    observed_rs = ch.classify(np.concatenate([after.mean.ravel(), after.var.ravel()]), cands, tol_rs)
    ch.equal(rec, "virtual_batch_running_stats", declared_rs.value, observed_rs, source=declared_rs.source,
             extra={"layout": spec.layout, "virtual_batch_size": vbs})


def _flatten_features(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Move the feature axes last and flatten them into one: (..., F)."""
    moved = np.moveaxis(a, axes, tuple(range(-len(axes), 0)))
    return moved.reshape(-1, int(np.prod([a.shape[i] for i in axes])))


def test_several_axes(case, rec):
    """BatchNorm whose statistics are per element of two axes (width and channel of NHWC): supported (then the
    oracle's output and running statistics), or a declared error."""
    _needs(case, "rebuild_with_axes", "no BatchNorm over several axes")
    spec = case.spec(rank=4, channels_last=True)
    bn = case.build(spec)
    x = data.batch(spec)
    axes = (2, 3)
    try:
        bn.rebuild_with_axes(axes, x.shape)
        rec.snippet = bn.snippet() + f"  # rebuilt with axes {axes}"
        st = bn.get_state()
        y = bn.forward(x, training=True)
    except Unsupported:
        raise
    except Exception as e:  # the framework refuses several axes
        observed, y = _error(e), None
    else:
        observed = "supported"
    declared = _declared(case, "several_axes")
    ch.equal(rec, "several_axes", declared.value, observed, source=declared.source, extra={"axes": list(axes)})
    if y is None:
        return
    xf = _flatten_features(x, axes)
    y_ref, m = ref.forward_train(xf, None, None, spec.eps, -1)
    tol = tl.bn_output(xf, -1, y_ref, None, spec.eps, io_dtype=spec.dtype)
    ch.close(rec, "several_axes_training_output", _flatten_features(y, axes), y_ref, tol,
             declared="oracle with statistics per (width, channel)", extra={"axes": list(axes)})
    after = bn.get_state()
    estimator = case.decl.estimator_for(bn.code_path(x.shape))
    o_mean, o_var = ref.update_running(st.mean.ravel(), st.var.ravel(), m, spec.momentum, estimator, 1)
    tol_rs = tl.running_stats([xf], -1, stats_dtype=spec.dtype, steps=1, state_scale=1.0)
    ch.close(rec, "several_axes_running_stats", np.concatenate([after.mean.ravel(), after.var.ravel()]),
             np.concatenate([o_mean, o_var]), tol_rs, declared=f"oracle update per (width, channel), {estimator}",
             source=case.decl.running_var_estimator.source, extra={"axes": list(axes)})


CONSTRUCTED_MODES = [(True, False), (False, True), (True, None), (False, None)]


@pytest.mark.parametrize("modes", CONSTRUCTED_MODES,
                         ids=lambda p: f"constructed={p[0]}-call={'omitted' if p[1] is None else p[1]}")
def test_use_running_average_constructed_and_called(case, rec, modes):
    """use_running_average given at construction and at call (or only at construction): which statistics normalize,
    or an error."""
    constructed, call = modes
    _needs(case, "forward_constructed_mode", "no use_running_average at construction")
    spec, bn, st, x = case.layer(rec, rank=2)
    try:
        y = bn.forward_constructed_mode(x, constructed, call)
    except Unsupported:
        raise
    except Exception as e:  # the framework refuses the combination
        observed = _error(e)
    else:
        batch_ref, _ = ref.forward_train(x, st.scale, st.offset, spec.eps, spec.channel_axis)
        running_ref = ref.forward_inference(x, st.scale, st.offset, st.mean, st.var, spec.eps, spec.channel_axis)
        tol = tl.bn_output(x, spec.channel_axis, batch_ref, st.scale, spec.eps, io_dtype=spec.dtype)
        observed = ch.classify(y, {"batch statistics": batch_ref, "running statistics": running_ref}, tol)
    word = {True: "true", False: "false", None: "omitted"}
    declared = _declared(case, f"use_running_average_{word[constructed]}_then_{word[call]}")
    ch.equal(rec, "use_running_average_constructed_and_called", declared.value, observed, source=declared.source,
             extra={"constructed": constructed, "call": call})
