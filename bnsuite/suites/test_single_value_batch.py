"""A training batch with one value per channel: an error, a degenerate output equal to the offset, or the input
passed through unchanged."""

import numpy as np
import pytest

from bnsuite.suites import checks as ch
from bnsuite.suites import data
from bnsuite.suites import tolerances as tl


@pytest.mark.parametrize("rank", [2, 4], ids=lambda r: f"rank{r}")
def test_single_value_per_channel(case, rec, rank):
    spec = case.spec(rank=rank, channels_last=True)
    bn = case.build(spec)
    rec.snippet = bn.snippet()
    st = data.state(spec)
    bn.set_state(st)
    shape = [1] * rank
    shape[spec.channel_axis] = spec.num_features
    x = data.batch(spec)[tuple(slice(0, s) for s in shape)]
    try:
        y = bn.forward(x, training=True)
    except Exception as e:
        observed = f"error:{type(e).__name__}"
        detail = str(e).splitlines()[0][:200] if str(e) else ""
    else:
        offset = np.zeros(spec.num_features) if st.offset is None else st.offset
        tol = tl.degenerate_output(x, st.scale, st.offset, spec.eps, spec.dtype)
        if tol.allows(y.reshape(-1), offset).all():
            observed = "offset"
        elif np.array_equal(y, x):  # the layer skipped normalization: scale, offset and statistics ignored
            observed = "input unchanged"
        else:
            observed = f"other: {y.ravel().tolist()}"
        detail = f"max |y - offset| = {float(np.max(np.abs(y.reshape(-1) - offset))):.3g} ({tol.why})"
    decl = case.decl.single_value_batch
    ch.equal(rec, "single_value_batch", decl.value, observed, source=decl.source, extra={"detail": detail})
