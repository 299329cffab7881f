"""Mixed precision as users run it: a layer whose parameters are NOT in the activations' low-precision dtype.

Each adapter declares its framework's idioms (Declaration.mixed_precision; adapters/mixed_precision/ names them and
runs them with the framework's real machinery: torch.autocast, Keras dtype policies, Flax dtype/param_dtype, a TF1
float32 layer fed a float16 placeholder). Per idiom the suite checks, against the declaration:

* the output dtype, the dtype of scale/offset, the dtype of the running statistics when built and after one
  training step;
* the training output, the running mean and variance after the step, and the inference output after it, against the
  float64 oracle within bounds derived from the declared statistics, storage and output dtypes
  (suites/tolerances/: bn_output, mixed_running_stats): statistics computed in a narrower dtype than declared, or
  running statistics stored in one, exceed them;
* on activations whose variance exceeds float16's range (65504), whether the running variance stays finite, and the
  training output and running variance against the oracle where it is declared to.

The activations are generated in the low-precision dtype (exactly representable), so the oracle sees what the layer
sees; the layer's state is the seeded state rounded to the declared storage dtypes.
"""

import numpy as np
import pytest

from bnsuite.adapters import capabilities
from bnsuite.adapters import reference as ref
from bnsuite.adapters.base import Unsupported
from bnsuite.suites import checks as ch
from bnsuite.suites import data
from bnsuite.suites import summaries
from bnsuite.suites import tolerances as tl
from bnsuite.suites.cases import declared_params

# Per-channel std 500..2000 (data.batch's 0.5..2 times WIDE): every channel's variance is >= 2.5e5, beyond float16's
# largest finite value 65504, while every value stays well inside float16's range.
WIDE = 1000.0
PER_CASE = {"mixed_idiom": lambda case: declared_params(case, "mixed_precision", "no-mixed-precision",
                                                         "mixed-precision idioms")}
FLOAT16_MAX = 65504.0
TABLE: list[dict] = []  # one row per case, for the terminal summary and the results file ("matrix" records)


def _round_state(st, rule):
    r = lambda a, dt: None if a is None else data.representable(a, dt)
    return type(st)(r(st.scale, rule.params), r(st.offset, rule.params), r(st.mean, rule.state),
                    r(st.var, rule.state))


def _running_dtype(dtypes: dict) -> str:
    present = sorted({dtypes[k] for k in ("mean", "var") if dtypes.get(k) is not None})
    return present[0] if len(present) == 1 else f"mixed(mean={dtypes.get('mean')},var={dtypes.get('var')})"


def _params_dtype(dtypes: dict) -> str:
    present = sorted({dtypes[k] for k in ("scale", "offset") if dtypes.get(k) is not None})
    return present[0] if len(present) == 1 else f"mixed(scale={dtypes.get('scale')},offset={dtypes.get('offset')})"


def _table_row(rec, idiom: str, rule, run) -> dict:
    """What the case observed, one line: dtypes, worst error over its bound, finiteness, verdict."""
    by = {c["property"]: c for c in rec.checks}
    err = lambda p: (f"{by[p]['max_abs_err']:.2g} / {by[p]['atol'] + by[p]['rtol']:.2g}"
                     if p in by and by[p].get("max_abs_err") is not None else "-")
    return {"adapter": rec.base["adapter"], "device": rec.base["device"], "idiom": idiom,
            "output": run.output_dtype if run else "-", "statistics (declared)": rule.stats,
            "scale/offset": _params_dtype(run.dtypes_built) if run else "-",
            "running stats": _running_dtype(run.dtypes_after) if run else "-",
            "training err / bound": err("mixed_training_output"), "running var err / bound": err("mixed_running_var"),
            "running var finite (var > 65504)": by.get("mixed_wide_running_var_finite", {}).get("observed", "-"),
            "as declared": all(c["passed"] for c in rec.checks)}


def _record_row(rec, row: dict) -> None:
    TABLE.append(row)
    if rec.writer is not None:
        rec.writer.write("matrix", name="mixed_precision", **row)


def _running_ref(rule, st, moments, momentum, estimator):
    """The running (mean, var) the oracle expects after one step: one update, or the loaded state where the rule
    declares that the step does not update them."""
    if not rule.running_stats_update:
        return st.mean, st.var
    return ref.update_running(st.mean, st.var, moments, momentum, estimator, 1)


def test_mixed_precision(case, rec, mixed_idiom):
    cited = case.decl.mixed_precision[mixed_idiom]
    rule = cited.value
    low = mixed_idiom.rpartition("-")[2]
    spec = case.spec(rank=4, channels_last=case.decl.default_channels_last.value)
    axis = spec.channel_axis
    x = data.batch(spec.replace(dtype=low))
    st = _round_state(data.state(spec), rule)
    extra = {"idiom": mixed_idiom, "layout": spec.layout}
    rec.snippet = f"{case.adapter.id}: mixed-precision idiom {mixed_idiom!r} ({cited.source[:200]})"
    step = capabilities.require(case.adapter, "mixed_precision")
    try:
        run = step(case.adapter, mixed_idiom, spec, st, x)
        observed = "yes"
    except Unsupported as e:
        pytest.skip(f"{case.adapter.id}: {e}")
    except Exception as e:  # the framework refuses the idiom: that is the observation
        observed = f"error:{type(e).__name__}"
    else:
        rec.snippet = run.snippet or rec.snippet
    ch.equal(rec, "mixed_supported", rule.supported, observed, source=cited.source, extra=extra)
    if observed != "yes":
        return _record_row(rec, _table_row(rec, mixed_idiom, rule, None))
    extra["code_path"] = run.code_path
    ch.equal(rec, "mixed_output_dtype", rule.output, run.output_dtype, source=cited.source, extra=extra)
    ch.equal(rec, "mixed_params_dtype", rule.params, _params_dtype(run.dtypes_built), source=cited.source,
             extra=extra)
    ch.equal(rec, "mixed_state_dtype", rule.state, _running_dtype(run.dtypes_built), source=cited.source,
             extra=extra)
    ch.equal(rec, "mixed_state_dtype_after_training", rule.state_after_training or rule.state,
             _running_dtype(run.dtypes_after), source=cited.source, extra=extra)

    y_ref, moments = ref.forward_train(x, st.scale, st.offset, spec.eps, axis)
    tol = tl.bn_output(x, axis, y_ref, st.scale, spec.eps, io_dtype=rule.output, stats_dtype=rule.stats)
    ch.close(rec, "mixed_training_output", run.output, y_ref, tol,
             declared=f"oracle, statistics in {rule.stats}, output {rule.output}", source=cited.source, extra=extra)
    estimator = case.decl.estimator_for(run.code_path)
    mean_ref, var_ref = _running_ref(rule, st, moments, spec.momentum, estimator)
    state_dtype = rule.state_after_training or rule.state
    tol_rs = tl.mixed_running_stats(x, axis, stats_dtype=rule.stats, state_dtype=state_dtype,
                                    momentum=spec.momentum, state_scale=float(np.max(np.abs(st.var))))
    declared_rs = (f"oracle ({estimator} variance)" if rule.running_stats_update else
                   "the loaded state (declared: the step leaves the running statistics alone)") + \
        f", stored in {state_dtype}"
    ch.close(rec, "mixed_running_mean", run.state.mean, mean_ref, tol_rs, declared=declared_rs,
             source=cited.source, extra=extra)
    ch.close(rec, "mixed_running_var", run.state.var, var_ref, tol_rs, declared=declared_rs, source=cited.source,
             extra=extra)
    # Inference normalizes with the running statistics as the layer stores them after the step.
    yi_ref = ref.forward_inference(x, st.scale, st.offset, run.state.mean, run.state.var, spec.eps, axis)
    inf_dtype = max(rule.stats, state_dtype, key=tl.roundoff)
    tol_i = tl.bn_output(x, axis, yi_ref, st.scale, spec.eps, io_dtype=rule.output, stats_dtype=inf_dtype,
                         normalize_var=run.state.var)
    ch.close(rec, "mixed_inference_output", run.inference_output, yi_ref, tol_i,
             declared=f"oracle with the stored running statistics ({state_dtype})", source=cited.source, extra=extra)

    # Activations whose variance exceeds the float16 range.
    xw = data.representable(data.batch(spec, seed=3) * WIDE, low)
    assert np.min(xw.var(axis=tuple(a for a in range(xw.ndim) if a != axis))) > FLOAT16_MAX, "test design"
    wide = step(case.adapter, mixed_idiom, spec, st, xw)
    extra_w = {**extra, "input": f"per-channel variance > {FLOAT16_MAX:g}"}
    finite = bool(np.isfinite(wide.state.mean).all() and np.isfinite(wide.state.var).all())
    ch.equal(rec, "mixed_wide_running_var_finite", rule.running_var_finite, finite, source=cited.source,
             extra=extra_w)
    yw_ref, moments_w = ref.forward_train(xw, st.scale, st.offset, spec.eps, axis)
    if rule.stats == "float16":  # a batch variance held in float16 overflows to inf: x_hat = 0, every output the offset
        mean_w = moments_w.mean
        var_w16 = np.where(moments_w.var_biased > FLOAT16_MAX, np.inf, moments_w.var_biased)
        if rule.mean_sum_overflows:  # the sum behind the mean held in float16: inf mean, inf variance, NaN output
            sums = moments_w.mean * (xw.size // xw.shape[axis])
            mean_w = np.where(np.abs(sums) > FLOAT16_MAX, np.sign(sums) * np.inf, mean_w)
            var_w16 = np.where(np.isinf(mean_w), np.inf, var_w16)
        with np.errstate(invalid="ignore"):
            yw_ref = ref.normalize(xw, mean_w, var_w16, st.scale, st.offset, spec.eps, axis)
    # the bound of the finite outputs (a NaN of the oracle is matched by a NaN only)
    tol_w = tl.bn_output(xw, axis, np.where(np.isfinite(yw_ref), yw_ref, 0.0), st.scale, spec.eps,
                         io_dtype=rule.output, stats_dtype=rule.stats)
    ch.close(rec, "mixed_wide_training_output", wide.output, yw_ref, tol_w,
             declared=f"oracle, statistics in {rule.stats}", source=cited.source, extra=extra_w)
    if rule.running_var_finite:
        _, var_w = _running_ref(rule, st, moments_w, spec.momentum, estimator)
        tol_wv = tl.mixed_running_stats(xw, axis, stats_dtype=rule.stats, state_dtype=state_dtype,
                                        momentum=spec.momentum, state_scale=float(np.max(np.abs(st.var))))
        ch.close(rec, "mixed_wide_running_var", wide.state.var, var_w, tol_wv, declared=declared_rs,
                 source=cited.source, extra=extra_w)
    _record_row(rec, _table_row(rec, mixed_idiom, rule, run))


def _line(r: dict) -> str:
    return (f"  {'ok ' if r['as declared'] else 'MISMATCH'} {r['adapter']:16s} {r['idiom']:24s} "
            f"out {r['output']:8s} params {r['scale/offset']:8s} running {r['running stats']:8s} "
            f"train {r['training err / bound']:17s} run.var {r['running var err / bound']:17s} "
            f"finite at var>65504: {r['running var finite (var > 65504)']}")


summaries.register_rows("bnsuite: mixed precision (output / scale+offset / running stats dtypes; max error / bound)",
                        TABLE, _line)
