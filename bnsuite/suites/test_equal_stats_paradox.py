"""The "equal running stats" paradox.

After one step with canonical momentum 1 the running statistics ARE the batch statistics, yet the training-mode and
inference-mode outputs on that same batch differ where the running variance is the unbiased estimate: inference
divides by sqrt(var * n/(n-1) + eps) instead of sqrt(var + eps). Where the running variance is biased they agree.
"""

import numpy as np
import pytest

from bnsuite.adapters import reference as ref
from bnsuite.suites import checks as ch
from bnsuite.suites import tolerances as tl


@pytest.mark.parametrize("rank", [2, 4], ids=lambda r: f"rank{r}")
def test_train_eval_gap_after_copying_batch_stats(case, rec, rank):
    spec, bn, st, x = case.layer(rec, rank=rank, channels_last=True, momentum=1.0)
    y_train = bn.forward(x, training=True)
    y_eval = bn.forward(x, training=False)
    axis = spec.channel_axis
    m = ref.moments(x, axis)
    same = ref.normalize(x, m.mean, m.var_biased, st.scale, st.offset, spec.eps, axis)
    bessel = ref.normalize(x, m.mean, m.var_unbiased, st.scale, st.offset, spec.eps, axis)
    tol = tl.bn_output(x, axis, same, st.scale, spec.eps, io_dtype=spec.dtype)
    tl.assert_separable(tol.atol, float(np.max(np.abs(bessel - same))), "a Bessel-factor gap from none")
    observed = ch.classify(y_eval - y_train, {"identical": np.zeros_like(same), "bessel_gap": bessel - same},
                           tl.difference_of_outputs(tol, tol))
    estimator = case.decl.estimator_for(bn.code_path(x.shape))
    declared = "bessel_gap" if estimator == "unbiased" else "identical"
    ch.equal(rec, "train_eval_gap", declared, observed, source=case.decl.running_var_estimator.source,
             extra={"max_train_eval_diff": float(np.max(np.abs(y_eval - y_train))), "n": m.n,
                    "code_path": bn.code_path(x.shape)})
