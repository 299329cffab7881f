"""Precision: what a layer built in float16, bfloat16 or float64 really does, against its declaration.

For each input dtype the declaration (Declaration.precision) says whether the framework supports it, the output dtype,
the dtype the batch statistics are computed in and the dtype the state is stored in. The suite checks the dtypes it
can observe (output, state before and after a training step) and the error against the float64 oracle, within
tolerances derived from the unit roundoff of the declared output dtype and the declared statistics dtype (a framework
that computed statistics in a narrower dtype than declared would exceed them).

The oracle is fed the state as the layer stores it: the suite's state rounded to the declared state dtype.
"""

import pytest

from bnsuite.adapters import reference as ref
from bnsuite.adapters.base import Unsupported
from bnsuite.suites import checks as ch
from bnsuite.suites import data
from bnsuite.suites import tolerances as tl
from bnsuite.suites.cases import layout_id

PREC_LAYOUTS = [(2, False), (4, False), (4, True)]


def _stored(st, dtype):
    r = lambda a: None if a is None else data.representable(a, dtype)
    return type(st)(r(st.scale), r(st.offset), r(st.mean), r(st.var))


def _one(dtypes: dict) -> str:
    present = sorted({d for d in dtypes.values() if d is not None})
    return present[0] if len(present) == 1 else "mixed(" + ",".join(f"{k}={v}" for k, v in dtypes.items()) + ")"


@pytest.mark.dtypes("float16", "bfloat16", "float64")
@pytest.mark.parametrize("layout", PREC_LAYOUTS, ids=layout_id)
def test_precision(case, rec, layout):
    rank, channels_last = layout
    spec = case.spec(rank=rank, channels_last=channels_last)
    cited = case.decl.precision_for(spec.dtype)
    if cited is None:
        pytest.skip(f"{case.adapter.id}: no precision rule declared for {spec.dtype}")
    st = data.state(spec)
    x = data.batch(spec)
    try:
        bn = case.adapter(spec)
        rec.snippet = bn.snippet()
        cited = case.decl.precision_for(spec.dtype, bn.code_path(x.shape))
        bn.set_state(_stored(st, cited.value.state or spec.dtype))
        y = bn.forward(x, training=True)
        observed = "yes"
    except Unsupported as e:
        pytest.skip(f"{case.adapter.id}: {e}")
    except Exception as e:  # the framework refuses the dtype: that is the observation
        observed = f"error:{type(e).__name__}"
    rule = cited.value
    extra = {"layout": spec.layout}
    ch.equal(rec, "precision_supported", rule.supported, observed, source=cited.source, extra=extra)
    if observed != "yes":
        return
    extra["code_path"] = bn.code_path(x.shape)
    st = _stored(st, rule.state)
    axis = spec.channel_axis
    io_dtype = rule.output or spec.dtype
    ch.equal(rec, "precision_output_dtype", rule.output, bn.last_output_dtype, source=cited.source, extra=extra)
    # The oracle uses eps as the kernel receives it (rounded where the declaration says the kernel takes float32).
    eps = spec.eps if rule.hyperparameters is None else float(data.representable(spec.eps, rule.hyperparameters))
    y_ref, _ = ref.forward_train(x, st.scale, st.offset, eps, axis)
    tol = tl.bn_output(x, axis, y_ref, st.scale, spec.eps, io_dtype=io_dtype, stats_dtype=rule.stats)
    ch.close(rec, "precision_training_output", y, y_ref, tol, declared=f"oracle, statistics in {rule.stats}",
             source=cited.source, extra=extra)
    running = {k: v for k, v in bn.state_dtypes().items() if k in ("mean", "var")}
    ch.equal(rec, "precision_state_dtype_after_training", rule.state_after_training or rule.state,
             _one(running), source=cited.source, extra=extra)
    # Inference from a freshly set state (the training step moved the running statistics).
    bn2 = case.build(spec)
    bn2.set_state(st)
    ch.equal(rec, "precision_state_dtype", rule.state, _one(bn2.state_dtypes()), source=cited.source, extra=extra)
    yi = bn2.forward(x, training=False)
    yi_ref = ref.forward_inference(x, st.scale, st.offset, st.mean, st.var, eps, axis)
    # Inference normalizes with the STORED running statistics; a framework that does not promote them does
    # its per-element arithmetic (rsqrt(var + eps), ...) in the storage dtype: use the coarser of the two.
    inf_dtype = max(rule.stats, rule.state, key=tl.roundoff)
    tol_i = tl.bn_output(x, axis, yi_ref, st.scale, spec.eps, io_dtype=io_dtype, stats_dtype=inf_dtype,
                         normalize_var=st.var)
    ch.close(rec, "precision_inference_output", yi, yi_ref, tol_i, declared=f"oracle, running statistics "
             f"stored in {rule.state}", source=cited.source, extra=extra)
