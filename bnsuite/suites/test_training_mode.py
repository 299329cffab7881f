"""Training mode normalizes with the batch statistics (biased variance) and equals the oracle, in every layout."""

import pytest

from bnsuite.adapters import reference as ref
from bnsuite.suites import checks as ch
from bnsuite.suites import tolerances as tl
from bnsuite.suites.cases import LAYOUTS, layout_id


@pytest.mark.parametrize("layout", LAYOUTS, ids=layout_id)
def test_training_output(case, rec, layout):
    rank, channels_last = layout
    spec, bn, st, x = case.layer(rec, rank=rank, channels_last=channels_last)
    y = bn.forward(x, training=True)
    y_ref, _ = ref.forward_train(x, st.scale, st.offset, spec.eps, spec.channel_axis)
    tol = tl.bn_output(x, spec.channel_axis, y_ref, st.scale, spec.eps, io_dtype=spec.dtype)
    ch.close(rec, "training_output", y, y_ref, tol, declared="oracle with batch statistics",
             source=case.decl.normalize_estimator.source)


def test_training_keeps_affine_params(case, rec):
    """A training forward updates the running statistics only: without an optimizer step, the scale and offset read
    back are the ones loaded."""
    spec, bn, st, x = case.layer(rec, rank=2)
    bn.forward(x, training=True)
    after = bn.get_state()
    for prop, observed, loaded in (("training_keeps_scale", after.scale, st.scale),
                                   ("training_keeps_offset", after.offset, st.offset)):
        ch.close(rec, prop, observed, loaded, tl.exact("no update without an optimizer step"),
                 declared="the loaded value")
