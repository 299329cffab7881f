"""Inference with batch statistics (torch track_running_stats=False, Flax use_running_average=False)."""

import numpy as np

from bnsuite.adapters import reference as ref
from bnsuite.suites import checks as ch
from bnsuite.suites import tolerances as tl


def test_batch_stats_at_inference(case, rec):
    how = case.needs("batch_stats_inference", "way to normalize with batch statistics at inference")
    spec, bn, st, x = case.layer(rec, rank=4, track_running_stats=False)
    y = bn.forward(x, training=False)
    y_ref, _ = ref.forward_train(x, st.scale, st.offset, spec.eps, spec.channel_axis)
    tol = tl.bn_output(x, spec.channel_axis, y_ref, st.scale, spec.eps, io_dtype=spec.dtype)
    ch.close(rec, "batch_stats_inference", y, y_ref, tol, declared=f"batch statistics via {how.value}",
             source=how.source)
    after = bn.get_state()
    before = (st.mean, st.var)
    if after.mean is not None and before[0] is not None:
        moved = bool(np.any(after.mean != before[0]) or np.any(after.var != before[1]))
        ch.equal(rec, "batch_stats_inference_keeps_state", False, moved, source=how.source)
