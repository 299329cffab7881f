"""Freeze semantics: for every freezing idiom an adapter's framework offers, three facts after one real optimizer
step: (1) does the forward pass normalize with batch or running statistics, (2) do the running statistics change,
(3) do scale and offset change. Each fact is declared per adapter and checked against the real framework.
"""

import numpy as np
import pytest

from bnsuite.suites import summaries
from bnsuite.adapters import reference as ref
from bnsuite.adapters.base import Unsupported
from bnsuite.suites import checks as ch
from bnsuite.suites import data
from bnsuite.suites import tolerances as tl
from bnsuite.suites.cases import freeze_params, freeze_step_of

LR = 0.1
MATRIX: list[dict] = []  # rows for the terminal summary
PER_CASE = {"freeze_idiom": freeze_params}


def test_freeze_idiom(case, rec, freeze_idiom):
    decl = case.decl
    declared = decl.freeze[freeze_idiom]
    facts = declared.value
    spec, bn, st, x = case.layer(rec, rank=4, channels_last=decl.default_channels_last.value, momentum=0.1)
    dy = data.cotangent(x)
    row = {"adapter": case.adapter.id, "device": case.device, "idiom": freeze_idiom}
    freeze_step_of(case, freeze_idiom)
    try:
        y = bn.frozen_step(freeze_idiom, x, dy, LR)
    except Unsupported as e:
        pytest.fail(f"{case.adapter.id}: declared freeze idiom {freeze_idiom!r} cannot run: {e}", pytrace=False)
    except Exception as e:  # the framework refuses the idiom: that is the observed fact
        observed_error = type(e).__name__
        row.update(normalizes_with="-", running_stats_update="-", params_update="-", error=observed_error)
        _record_row(rec, row, facts, declared.source)
        ch.equal(rec, "freeze_error", facts.error, observed_error, source=declared.source,
                 extra={"idiom": freeze_idiom, "detail": str(e).splitlines()[0][:300] if str(e) else ""})
        return
    after = bn.get_state()
    axis = spec.channel_axis
    y_batch, _ = ref.forward_train(x, st.scale, st.offset, spec.eps, axis)
    y_running = ref.forward_inference(x, st.scale, st.offset, st.mean, st.var, spec.eps, axis)
    tol = tl.bn_output(x, axis, y_batch, st.scale, spec.eps, io_dtype=spec.dtype)
    normalizes_with = ch.classify(y, {"batch": y_batch, "running": y_running}, tol)
    # Movement is measured against the exact starting values; any change at all counts.
    stats_moved = bool(np.any(after.mean != st.mean) or np.any(after.var != st.var))
    params_moved = bool(np.any(after.scale != st.scale) or np.any(after.offset != st.offset))
    row.update(normalizes_with=normalizes_with, running_stats_update=stats_moved, params_update=params_moved,
               error=None, stats_change=float(np.max(np.abs(after.mean - st.mean))),
               params_change=float(np.max(np.abs(after.scale - st.scale))))
    _record_row(rec, row, facts, declared.source)
    extra = {"idiom": freeze_idiom}
    ch.equal(rec, "freeze_error", facts.error, None, source=declared.source, extra=extra)
    ch.equal(rec, "freeze_normalizes_with", facts.normalizes_with, normalizes_with, source=declared.source,
             extra=extra)
    ch.equal(rec, "freeze_running_stats_update", facts.running_stats_update, stats_moved,
             source=declared.source, extra={**extra, "max_change": row["stats_change"]})
    ch.equal(rec, "freeze_params_update", facts.params_update, params_moved, source=declared.source,
             extra={**extra, "max_change": row["params_change"]})


def _record_row(rec, row, facts, source):
    declared = {"normalizes_with": facts.normalizes_with, "running_stats_update": facts.running_stats_update,
                "params_update": facts.params_update, "error": facts.error}
    passed = all(row.get(k) == v for k, v in declared.items() if row.get(k) != "-") and \
        row.get("error") == facts.error
    full = {**row, "declared": declared, "passed": passed, "source": source}
    MATRIX.append(full)
    if rec.writer is not None:
        rec.writer.write("matrix", name="freeze", **full)


def _line(r: dict) -> str:
    mark = "ok " if r["passed"] else "MISMATCH"
    facts = (f"error {r['error']}" if r.get("error") else
             f"{r['normalizes_with']:8s} stats {'moved' if r['running_stats_update'] else 'kept '}  "
             f"params {'moved' if r['params_update'] else 'kept'}")
    return f"  {mark} {r['adapter']:16s} {r['device']:4s} {r['idiom']:38s} {facts}"


summaries.register_rows("bnsuite: freeze matrix (forward uses / running stats move / params move)", MATRIX, _line)
