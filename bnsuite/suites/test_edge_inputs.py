"""Inputs that break BatchNorm in production: an empty batch, NaN or inf in one channel, eps <= 0, and inference with
large-magnitude inputs and extreme running statistics.

Empty batches and eps <= 0 are judged against each adapter's declared facts (BatchNormAdapter.edge_inputs(), see
adapters/edge_facts.py); non-finite values and extreme magnitudes against the float64 oracle, which says where a NaN
may go (its own channel only) and what every finite output must be.
"""

import numpy as np
import pytest

from bnsuite.adapters import reference as ref
from bnsuite.adapters.base import State
from bnsuite.suites import checks as ch
from bnsuite.suites import data
from bnsuite.suites import tolerances as tl
from bnsuite.suites.cases import layout_id

EDGE_LAYOUTS = [(2, False), (4, True)]


def _declared(case, key: str):
    facts = case.adapter.edge_inputs()
    if key not in facts:
        pytest.skip(f"{case.adapter.id} declares no edge-input fact {key!r} (BatchNormAdapter.edge_inputs())")
    return facts[key]


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
