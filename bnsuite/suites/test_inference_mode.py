"""Inference mode normalizes with the running statistics and equals the oracle, in every layout."""

import pytest

from bnsuite.adapters import reference as ref
from bnsuite.suites import checks as ch
from bnsuite.suites import tolerances as tl
from bnsuite.suites.cases import LAYOUTS, layout_id


@pytest.mark.parametrize("layout", LAYOUTS, ids=layout_id)
def test_inference_output(case, rec, layout):
    rank, channels_last = layout
    spec, bn, st, x = case.layer(rec, rank=rank, channels_last=channels_last)
    y = bn.forward(x, training=False)
    y_ref = ref.forward_inference(x, st.scale, st.offset, st.mean, st.var, spec.eps, spec.channel_axis)
    tol = tl.bn_output(x, spec.channel_axis, y_ref, st.scale, spec.eps, io_dtype=spec.dtype, normalize_var=st.var)
    after = bn.get_state()
    ch.close(rec, "inference_output", y, y_ref, tol, declared="oracle with running statistics")
    # Inference must not move the running statistics.
    ch.close(rec, "inference_keeps_running_mean", after.mean, st.mean, tl.exact("no update"),
             declared="unchanged")
    ch.close(rec, "inference_keeps_running_var", after.var, st.var, tl.exact("no update"),
             declared="unchanged")
