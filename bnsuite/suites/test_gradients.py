"""Gradients of sum(y * dy): training mode differentiates through the batch statistics, inference mode through a fixed
per-channel affine map; both equal the float64 oracle (reference.backward_train / backward_inference), in a few
layouts. A backward pass must not move the state the suite set."""

import numpy as np
import pytest

from bnsuite.adapters import reference as ref
from bnsuite.suites import checks as ch
from bnsuite.suites import data
from bnsuite.suites import tolerances as tl
from bnsuite.suites.cases import layout_id

GRAD_LAYOUTS = [(2, False), (4, False), (4, True)]


def _setup(case, rec, layout):
    rank, channels_last = layout
    spec, bn, st, x = case.layer(rec, rank=rank, channels_last=channels_last)
    dy = data.representable(data.cotangent(x), spec.dtype)
    return spec, bn, st, x, dy


# Each mode's properties, written whole: gradient name or running statistic -> property.
TRAINING = {"dx": "training_backward_dx", "dscale": "training_backward_dscale",
            "doffset": "training_backward_doffset", "mean": "training_backward_keeps_running_mean",
            "var": "training_backward_keeps_running_var"}
INFERENCE = {"dx": "inference_backward_dx", "dscale": "inference_backward_dscale",
             "doffset": "inference_backward_doffset", "mean": "inference_backward_keeps_running_mean",
             "var": "inference_backward_keeps_running_var"}


def _check(rec, props, mode, grads, expected, tols, st, after, extra):
    for name, obs, exp in zip(("dx", "dscale", "doffset"), (grads.dx, grads.dscale, grads.doffset), expected):
        if name != "dx" and obs is None:
            ch.equal(rec, props[name], "a gradient", "None (no parameter)", extra=extra)
            continue
        ch.close(rec, props[name], obs, exp, tols[name], declared=f"oracle {mode} backward",
                 source="adapters/reference.py", extra=extra)
    for field in ("mean", "var"):
        ch.close(rec, props[field], getattr(after, field), getattr(st, field),
                 tl.exact("a backward call restores the state"), declared="unchanged")


@pytest.mark.parametrize("layout", GRAD_LAYOUTS, ids=layout_id)
def test_training_backward(case, rec, layout):
    spec, bn, st, x, dy = _setup(case, rec, layout)
    grads = bn.backward(x, dy, training=True)
    expected = ref.backward_train(x, dy, st.scale, spec.eps, spec.channel_axis)
    tols = tl.bn_backward(x, dy, spec.channel_axis, expected[0], st.scale, spec.eps, dtype=spec.dtype)
    # The suite must tell "through the batch statistics" from "affine only": check the margin first.
    m = ref.moments(x, spec.channel_axis)
    affine_only = ref.backward_inference(x, dy, st.scale, m.mean, m.var_biased, spec.eps, spec.channel_axis)[0]
    scale_dx = float(np.max(np.abs(expected[0])))
    tl.assert_separable(tols["dx"].atol / scale_dx, float(np.max(np.abs(affine_only - expected[0]))) / scale_dx,
                        "training backward through the batch statistics from the affine-only gradient")
    _check(rec, TRAINING, "training", grads, expected, tols, st, bn.get_state(), {"layout": spec.layout})


@pytest.mark.parametrize("layout", GRAD_LAYOUTS, ids=layout_id)
def test_inference_backward(case, rec, layout):
    spec, bn, st, x, dy = _setup(case, rec, layout)
    grads = bn.backward(x, dy, training=False)
    expected = ref.backward_inference(x, dy, st.scale, st.mean, st.var, spec.eps, spec.channel_axis)
    tols = tl.bn_backward(x, dy, spec.channel_axis, expected[0], st.scale, spec.eps, dtype=spec.dtype,
                          running_mean=st.mean, running_var=st.var)
    _check(rec, INFERENCE, "inference", grads, expected, tols, st, bn.get_state(), {"layout": spec.layout})
