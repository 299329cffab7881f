"""BatchNorm inside training loops: gradient accumulation and weight averaging, run with each framework's real tools
(bnsuite/lanes/loops: torch micro-batches and torch.optim.swa_utils, Keras 3 SGD(gradient_accumulation_steps=k) and
use_ema in fit, optax.ema over Flax params and batch_stats) and checked against the declared rule AND the float64
oracle of the loops (bnsuite/lanes/loops/reference.py):

* accumulation: how many times the running statistics move during one accumulated step (classified between k
  updates with each micro-batch's statistics and one with the large batch's), their values, scale/offset after the
  step, and the gap between the accumulated step and one step on the concatenated batch (BatchNorm's batch statistics
  differ, so dscale differs; doffset = sum(dy) does not), the framework's gap against the oracle's;
* averaging: what the averaged model's running statistics are (averaged, the live model's, the stale initial ones,
  or recomputed), their values, and the averaged scale/offset.
"""

import numpy as np
import pytest

from bnsuite.adapters import capabilities
from bnsuite.adapters.base import State
from bnsuite.lanes.loops import reference as lref
from bnsuite.suites import checks as ch
from bnsuite.suites import data
from bnsuite.suites import summaries
from bnsuite.suites import tolerances as tl
from bnsuite.suites import tolerances_loops as tll

K, M, T, LR, EPS = 4, 8, 3, 0.1, 1e-3  # k micro-batches of m samples; T averaged steps; SGD learning rate; eps
TABLE: list[dict] = []  # one row per idiom, for the terminal summary and the results file ("matrix" records)


def _setup(case, rec, what: str):
    loops = capabilities.require(case.adapter, "training_loops")
    if not getattr(loops, what):
        pytest.skip(f"{case.adapter.id}: its training_loops ({loops.__name__}) declares no {what} idiom")
    spec = case.spec(rank=2, eps=EPS)
    bn = case.build(spec)
    st = data.state(spec)
    batches = [data.batch(spec, seed=10 + i, batch_size=M) for i in range(max(K, T))]
    dys = [data.cotangent(x, seed=20 + i) for i, x in enumerate(batches)]
    return loops, spec, st, batches, dys, case.decl.estimator_for(bn.code_path(batches[0].shape))


def _row(rec, loop: str, idiom: str, declared: str, observed: str, source: str, props: tuple[str, ...],
         extra: dict) -> None:
    by = {c["property"]: c for c in rec.checks if c.get("idiom") == idiom}
    errs = [by[p] for p in props if p in by and by[p].get("max_abs_err") is not None]
    worst = max(errs, key=lambda c: c["max_abs_err"] / max(c["atol"], 1e-300), default=None)
    row = {"adapter": rec.base["adapter"], "device": rec.base["device"], "loop": loop, "idiom": idiom,
           "declared": declared, "observed": observed, "source": source,
           "max err / bound": (f"{worst['max_abs_err']:.2g} / {worst['atol']:.2g} ({worst['property']})"
                               if worst else "-"),
           "as declared": all(c["passed"] for c in by.values()), **extra}
    TABLE.append(row)
    if rec.writer is not None:
        rec.writer.write("matrix", name="training_loops", **row)


def _stats(s: State) -> np.ndarray:
    return np.concatenate([s.mean, s.var])


def _spread(candidates: list[np.ndarray]) -> float:
    """The smallest max-abs difference between two candidates (what a classification must tell apart)."""
    return min(float(np.max(np.abs(a - b))) for i, a in enumerate(candidates) for b in candidates[i + 1:])


def test_gradient_accumulation(case, rec):
    loops, spec, st, batches, dys, estimator = _setup(case, rec, "accumulation")
    micro, mdys = batches[:K], dys[:K]
    axis = spec.channel_axis
    tol_rs = tll.accumulated_running_stats(micro, axis, dtype=spec.dtype, state_scale=float(np.max(st.var)))
    g_acc = lref.accumulated_grad(micro, mdys, st.scale, spec.eps, axis)
    g_big = lref.large_batch_grad(micro, mdys, st.scale, spec.eps, axis)
    g_max = float(np.max(np.abs(np.concatenate([*g_acc, *g_big]))))
    tol_acc = tll.sgd_step(micro, mdys, axis, st.scale, st.offset, spec.eps, dtype=spec.dtype, lr=LR, grad_max=g_max)
    tol_big = tll.sgd_step([np.concatenate(micro)], [np.concatenate(mdys)], axis, st.scale, st.offset, spec.eps,
                           dtype=spec.dtype, lr=LR, grad_max=g_max)
    tol_gap = tll.step_difference(tol_acc, tol_big)
    oracle = {u: lref.accumulation(st, micro, mdys, eps=spec.eps, axis=axis, momentum=spec.momentum,
                                   estimator=estimator, lr=LR, statistics_updates=u)
              for u in ("every-micro-batch", "once")}
    scale_gap = LR * float(np.max(np.abs(g_acc[0] - g_big[0])))
    tl.assert_separable(tol_gap.atol, scale_gap, "the accumulated step from the large-batch step")
    tl.assert_separable(tol_rs.atol, _spread([_stats(o[0]) for o in oracle.values()]),
                        "k statistics updates from one")
    for idiom, cited in loops.accumulation.items():
        rule = cited.value
        extra = {"idiom": idiom, "k": K, "micro_batch": M}
        run = loops.accumulate(case.adapter, idiom, spec, st, micro, mdys, LR)
        rec.snippet = run.snippet or rec.snippet
        observed = ch.classify(_stats(run.accumulated), {u: _stats(o[0]) for u, o in oracle.items()}, tol_rs)
        ch.equal(rec, "accumulation_statistics_updates", rule.statistics_updates, observed, source=cited.source,
                 extra=extra)
        acc_ref, large_ref = oracle[rule.statistics_updates]
        decl = f"oracle: {rule.statistics_updates} update(s) of the running statistics over {K} micro-batches"
        ch.close(rec, "accumulation_running_mean", run.accumulated.mean, acc_ref.mean, tol_rs, declared=decl,
                 source=cited.source, extra=extra)
        ch.close(rec, "accumulation_running_var", run.accumulated.var, acc_ref.var, tol_rs, declared=decl,
                 source=cited.source, extra=extra)
        decl_p = f"oracle: one SGD step with the mean of {K} micro-batch gradients"
        ch.close(rec, "accumulation_scale", run.accumulated.scale, acc_ref.scale, tol_acc, declared=decl_p,
                 source=cited.source, extra=extra)
        ch.close(rec, "accumulation_offset", run.accumulated.offset, acc_ref.offset, tol_acc, declared=decl_p,
                 source=cited.source, extra=extra)
        gap = np.concatenate([run.accumulated.scale - run.large_batch.scale,
                              run.accumulated.offset - run.large_batch.offset])
        gap_ref = np.concatenate([acc_ref.scale - large_ref.scale, acc_ref.offset - large_ref.offset])
        ch.close(rec, "accumulation_gradient_gap", gap, gap_ref, tol_gap,
                 declared="oracle: accumulated minus large-batch update (dscale differs, doffset equal)",
                 source=cited.source, extra={**extra, "oracle_scale_gap": scale_gap})
        _row(rec, "gradient accumulation", idiom, f"statistics: {rule.statistics_updates}", f"statistics: {observed}",
             cited.source, ("accumulation_running_mean", "accumulation_running_var", "accumulation_scale",
                            "accumulation_offset", "accumulation_gradient_gap"),
             {"scale step gap vs large batch (oracle)": f"{scale_gap:.3g}",
              "running mean gap vs large batch (oracle)":
                  f"{float(np.max(np.abs(acc_ref.mean - oracle['once'][0].mean))):.3g}"})


def test_weight_averaging(case, rec):
    loops, spec, st, batches, dys, estimator = _setup(case, rec, "averaging")
    batches, dys = batches[:T], dys[:T]
    axis = spec.channel_axis
    snaps = lref.trajectory(st, batches, dys, eps=spec.eps, axis=axis, momentum=spec.momentum, estimator=estimator,
                            lr=LR)
    state_scale = float(max(np.max(st.var), *(np.max(s.var) for s in snaps)))
    tol_rs = tll.averaged_running_stats(batches, axis, dtype=spec.dtype, state_scale=state_scale)
    g_max = float(max(np.max(np.abs(np.concatenate(lref.grad_params(x, dy, st.scale, spec.eps, axis))))
                      for x, dy in zip(batches, dys)))
    step = tll.sgd_step(batches[:1], dys[:1], axis, st.scale, st.offset, spec.eps, dtype=spec.dtype, lr=LR,
                        grad_max=g_max)
    w_max = float(max(np.max(np.abs(np.concatenate([s.scale, s.offset]))) for s in [st, *snaps]))
    tol_p = tll.averaged_params(step, T, dtype=spec.dtype, value_max=w_max)
    for idiom, cited in loops.averaging.items():
        rule = cited.value
        extra = {"idiom": idiom, "steps": T}
        run = loops.average(case.adapter, idiom, spec, st, batches, dys, LR)
        rec.snippet = run.snippet or rec.snippet
        cands = lref.running_candidates(st, snaps, batches, kind=rule.params, decay=rule.decay, axis=axis,
                                        estimator=estimator)
        tl.assert_separable(tol_rs.atol, _spread([np.concatenate(c) for c in cands.values()]),
                            "the candidates for the averaged statistics")
        observed = ch.classify(_stats(run.averaged), {n: np.concatenate(c) for n, c in cands.items()}, tol_rs)
        ch.equal(rec, "averaging_running_stats", rule.running_stats, observed, source=cited.source, extra=extra)
        mean_ref, var_ref = cands[rule.running_stats]
        decl = f"oracle: the {rule.running_stats} running statistics"
        ch.close(rec, "averaging_running_mean", run.averaged.mean, mean_ref, tol_rs, declared=decl,
                 source=cited.source, extra=extra)
        ch.close(rec, "averaging_running_var", run.averaged.var, var_ref, tol_rs, declared=decl,
                 source=cited.source, extra=extra)
        decl_p = f"oracle: {rule.params} average of the {T} snapshots" + (f", decay {rule.decay}" if rule.decay else "")
        ch.close(rec, "averaging_scale", run.averaged.scale, lref.average([s.scale for s in snaps], rule.params,
                 rule.decay, st.scale), tol_p, declared=decl_p, source=cited.source, extra=extra)
        ch.close(rec, "averaging_offset", run.averaged.offset, lref.average([s.offset for s in snaps], rule.params,
                 rule.decay, st.offset), tol_p, declared=decl_p, source=cited.source, extra=extra)
        live_gap = float(np.max(np.abs(_stats(run.averaged) - np.concatenate(cands["averaged"]))))
        _row(rec, "weight averaging", idiom, f"params: {rule.params}; statistics: {rule.running_stats}",
             f"statistics: {observed}", cited.source,
             ("averaging_running_mean", "averaging_running_var", "averaging_scale", "averaging_offset"),
             {"statistics vs averaged ones (max abs)": f"{live_gap:.3g}"})


def _line(r: dict) -> str:
    return (f"  {'ok ' if r['as declared'] else 'MISMATCH'} {r['adapter']:16s} {r['loop']:22s} {r['idiom']:34s} "
            f"declared {r['declared']:44s} observed {r['observed']:30s} {r['max err / bound']}")


summaries.register_rows("bnsuite: training loops (declared / observed; worst error / bound)", TABLE, _line)
