"""Running statistics: the update after k steps, the variance estimator per code path, the cumulative average."""

import numpy as np
import pytest

from bnsuite.adapters import reference as ref
from bnsuite.suites import checks as ch
from bnsuite.suites import data, repro
from bnsuite.suites import tolerances as tl
from bnsuite.suites.cases import LAYOUTS, layout_id

STEP_LAYOUTS = [(2, False), (4, False), (4, True)]


def _run_steps(case, rec, spec, k, bn=None):
    bn = bn or case.build(spec)
    rec.snippet = bn.snippet()
    rec.layer_code = repro.adapter_setup(spec, case.adapter)  # a failure's script takes the first of these steps
    st = data.state(spec)
    bn.set_state(st)
    xs = data.batches(spec, k)
    for x in xs:
        bn.forward(x, training=True)
    return bn, st, xs, bn.get_state()


@pytest.mark.parametrize("steps", [1, 2, 5], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("layout", STEP_LAYOUTS, ids=layout_id)
def test_running_stats_after_steps(case, rec, layout, steps):
    rank, channels_last = layout
    spec = case.spec(rank=rank, channels_last=channels_last, momentum=0.1)
    bn, st, xs, after = _run_steps(case, rec, spec, steps)
    decl = case.decl
    estimator = decl.estimator_for(bn.code_path(xs[0].shape))
    mean_ref, var_ref = ref.train_steps(xs, st.mean, st.var, spec.momentum, estimator, spec.channel_axis)
    tol = tl.running_stats(xs, spec.channel_axis, stats_dtype=spec.dtype, steps=steps,
                           state_scale=float(np.max(np.abs(st.var))))
    extra = {"steps": steps, "code_path": bn.code_path(xs[0].shape), "estimator": estimator}
    ch.close(rec, "running_mean", after.mean, mean_ref, tol, declared=f"oracle, momentum weights "
             f"{decl.momentum_weights.value}", source=decl.momentum_weights.source, extra=extra)
    ch.close(rec, "running_var", after.var, var_ref, tol, declared=f"oracle, {estimator} estimator",
             source=decl.running_var_estimator.source, extra=extra)


@pytest.mark.parametrize("layout", LAYOUTS, ids=layout_id)
def test_running_var_estimator(case, rec, layout):
    """With canonical momentum 1 the running variance IS the batch variance estimate: name the estimator."""
    rank, channels_last = layout
    spec = case.spec(rank=rank, channels_last=channels_last, momentum=1.0)
    bn, st, xs, after = _run_steps(case, rec, spec, 1)
    m = ref.moments(xs[0], spec.channel_axis)
    tol = tl.running_stats(xs, spec.channel_axis, stats_dtype=spec.dtype, steps=1,
                           state_scale=float(np.max(np.abs(st.var))))
    tl.assert_separable(tol.rtol + tol.atol / float(np.min(m.var_biased)), 1.0 / (m.n - 1),
                        "the biased from the unbiased estimator")
    observed = ch.classify(after.var, {"biased": m.var_biased, "unbiased": m.var_unbiased}, tol)
    path = bn.code_path(xs[0].shape)
    decl = case.decl
    ch.equal(rec, "running_var_estimator", decl.estimator_for(path), observed,
             source=decl.running_var_estimator.source, extra={"code_path": path, "n": m.n},
             max_abs_err=float(np.max(np.abs(after.var - m.var(decl.estimator_for(path))))))


def test_running_var_estimator_two_values(case, rec):
    """The smallest batch with a variance (two values per channel, rank 2), where the unbiased estimate is twice the
    biased one: with canonical momentum 1 the running variance is the declared estimator's."""
    spec = case.spec(rank=2, momentum=1.0)
    bn = case.build(spec)
    rec.snippet = bn.snippet()
    st = data.state(spec)
    bn.set_state(st)
    x = data.two_values(spec)
    bn.forward(x, training=True)
    after = bn.get_state()
    m = ref.moments(x, spec.channel_axis)
    tol = tl.running_stats([x], spec.channel_axis, stats_dtype=spec.dtype, steps=1,
                           state_scale=float(np.max(np.abs(st.var))))
    tl.assert_separable(tol.rtol + tol.atol / float(np.min(m.var_biased)), 1.0 / (m.n - 1),
                        "the biased from the unbiased estimator")
    observed = ch.classify(after.var, {"biased": m.var_biased, "unbiased": m.var_unbiased}, tol)
    path = bn.code_path(x.shape)
    decl = case.decl
    ch.equal(rec, "running_var_estimator", decl.estimator_for(path), observed,
             source=decl.running_var_estimator.source, extra={"code_path": path, "n": m.n},
             max_abs_err=float(np.max(np.abs(after.var - m.var(decl.estimator_for(path))))))


def test_cumulative_average(case, rec):
    """torch's momentum=None: the running statistics are the plain average of every batch seen."""
    decl = case.decl
    cited = case.needs("cumulative_average", "cumulative moving average (momentum=None)")
    spec = case.spec(rank=2, momentum=None)
    bn = case.build_declared(rec, "cumulative_average", cited, spec)
    bn, st, xs, after = _run_steps(case, rec, spec, 5, bn)
    estimator = decl.estimator_for(bn.code_path(xs[0].shape))
    mean_ref, var_ref = ref.train_steps(xs, st.mean, st.var, None, estimator, spec.channel_axis)
    tol = tl.running_stats(xs, spec.channel_axis, stats_dtype=spec.dtype, steps=5,
                           state_scale=float(np.max(np.abs(st.var))))
    ch.close(rec, "cumulative_running_mean", after.mean, mean_ref, tol, declared="mean of the 5 batch means",
             source=decl.cumulative_average.source)
    ch.close(rec, "cumulative_running_var", after.var, var_ref, tol,
             declared=f"mean of the 5 {estimator} batch variances", source=decl.cumulative_average.source)
