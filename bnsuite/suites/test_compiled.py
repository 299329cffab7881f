"""The compiled and transformed lane: every path an adapter's "compile" capability declares (torch.compile,
torch.export, torch.func transforms, ...) runs the eager cases, checked against the same adapter run eagerly AND the
float64 oracle: training outputs, running statistics after 1 and 5 steps (momentum=None and the step counter too),
the switch to inference mode after the first call, gradients, the freeze idioms, and the path's declared facts.

A path's declaration says what it does with BatchNorm (bnsuite.lanes.compile.PathFacts); each check compares with
what the declaration predicts, so a path that silently drops a running-statistics update fails unless it declares
so (and then its finding names it). Each path runs once per process (suites/compiled_runs.py).
"""

import numpy as np
import pytest

from bnsuite.adapters import capabilities
from bnsuite.adapters import reference as ref
from bnsuite.suites import checks as ch
from bnsuite.suites import compiled_runs as cr
from bnsuite.suites import summaries
from bnsuite.suites import tolerances as tl
from bnsuite.suites import tolerances_compiled as tc

UNAVAILABLE: list[dict] = []
summaries.register_rows("compiled lane: wall seconds per path (compilation included)", cr.TIMINGS,
                        lambda r: f"{r['adapter']:>10}  {r['path']:<45} {r['what']:<24} {r['seconds']:7.2f} s")
summaries.register_rows("compiled lane: paths this machine cannot run", UNAVAILABLE,
                        lambda r: f"{r['adapter']:>10}  {r['path']:<45} {r['reason']}")


def _paths(case):
    """(lane, [(path, declared facts)]) of the adapter's compile capability; paths this machine cannot run are listed
    in the summary, and the test skips where none can run."""
    lane_cls = capabilities.require(case.adapter, "compile")  # a CompileLane subclass (capabilities.EXPECTS)
    paths = []
    for path, facts in lane_cls.declare().items():
        why = lane_cls.unavailable_reason(path)
        if why is None:
            paths.append((path, facts))
        elif not any(r["adapter"] == case.adapter.id and r["path"] == path for r in UNAVAILABLE):
            UNAVAILABLE.append({"adapter": case.adapter.id, "path": path, "reason": why})
    if not paths:
        pytest.skip(f"{case.adapter.id}: no compiled path can run here: "
                    + "; ".join(f"{r['path']}: {r['reason']}" for r in UNAVAILABLE if r["adapter"] == case.adapter.id))
    return lane_cls(case.adapter), paths


def _moved(after, before) -> bool:
    return any(a is not None and b is not None and not np.array_equal(a, b)
               for a, b in ((after.mean, before.mean), (after.var, before.var)))


def _observed_update(run, inp, estimator) -> str:
    """What the training calls did to the running statistics: updated (in sequence, as eagerly) / per-step (each
    step its own copy of the loaded statistics) / first-<n> (only the first n calls, in sequence) / passed / dropped,
    or the path's error."""
    if "train" in run.errors:
        return run.errors["train"]
    st, xs, axis = inp.state, inp.batches, inp.spec.channel_axis
    moved = _moved(run.states[-1], st)
    own = _moved(run.own_state, st)
    if not (moved and own):
        return "passed" if moved else "own-only" if own else "dropped"
    after = np.concatenate([run.states[-1].mean, run.states[-1].var])
    cands = {name: np.concatenate(ref.train_steps(b, st.mean, st.var, inp.spec.momentum, estimator, axis))
             for name, b in (("updated", xs), ("per-step", xs[-1:]),
                             *((f"first-{n}", xs[:n]) for n in range(1, len(xs))))}
    return ch.classify(after, cands, tc.running(xs, axis, inp.spec.dtype, len(xs), float(np.max(np.abs(st.var)))))


def _both(rec, prop_eager, prop_oracle, observed, eager, oracle, tol, agreement, decl, extra):
    """The path against eager (tolerance by the declared agreement) and against the oracle."""
    ch.close(rec, prop_eager, observed, eager, tc.vs_eager(tol, agreement), declared=f"eager ({agreement})",
             source=decl.source, extra=extra)
    ch.close(rec, prop_oracle, observed, oracle, tol, declared="oracle", source=decl.source, extra=extra)


def test_compiled_training(case, rec):
    """Training-mode outputs and the running statistics after 1 and 5 steps, as the path declares them."""
    lane, paths = _paths(case)
    inp = cr.inputs(case)
    eager = cr.eager(case, inp)
    spec, st, xs, axis = inp.spec, inp.state, inp.batches, inp.spec.channel_axis
    estimator = case.decl.estimator_for(eager.code_path)
    for path, decl in paths:
        facts, run = decl.value, cr.path_run(lane, case, path, inp)
        extra = {"path": path, "how": facts.how}
        ch.equal(rec, "compiled_running_stats_update", facts.running_stats, _observed_update(run, inp, estimator),
                 source=decl.source, extra=extra)
        if "train" in run.errors:
            continue
        # a path that cannot show its training output (a fit step) is checked on what it leaves in the state
        for i in sorted({0, len(xs) - 1}) if facts.train_normalizes != "not observable" else ():
            x = xs[i]
            if facts.train_normalizes == "batch":
                y_ref, _ = ref.forward_train(x, st.scale, st.offset, spec.eps, axis)
                y_eager, var = eager.train_outputs[i], None
            else:  # a mode baked in at export: the loaded running statistics, which never move
                y_ref = ref.forward_inference(x, st.scale, st.offset, st.mean, st.var, spec.eps, axis)
                y_eager, var = eager.eval_at_start[i], st.var
            tol = tc.output(x, axis, y_ref, st.scale, spec.eps, spec.dtype, normalize_var=var)
            _both(rec, "compiled_train_output_vs_eager", "compiled_train_output_vs_oracle", run.train_outputs[i],
                  y_eager, y_ref, tol, facts.agreement, decl, {**extra, "step": i + 1})
        for k in sorted({1, len(xs)}):
            after = run.states[k - 1]
            if facts.running_stats in ("updated", "passed"):
                mean_ref, var_ref = ref.train_steps(xs[:k], st.mean, st.var, spec.momentum, estimator, axis)
                eager_st = eager.states[k - 1]
                tol = tc.running(xs[:k], axis, spec.dtype, k, float(np.max(np.abs(st.var))))
            elif facts.running_stats.startswith("first-"):  # only the first n calls moved them, in sequence
                n = min(k, cr.first_n(facts.running_stats))
                mean_ref, var_ref = ref.train_steps(xs[:n], st.mean, st.var, spec.momentum, estimator, axis)
                eager_st = eager.states[n - 1]
                tol = tc.running(xs[:n], axis, spec.dtype, n, float(np.max(np.abs(st.var))))
            elif facts.running_stats == "per-step":  # step k updated its own copy of the loaded statistics
                mean_ref, var_ref = ref.train_steps(xs[k - 1:k], st.mean, st.var, spec.momentum, estimator, axis)
                eager_st = cr.eager_per_step(case, inp).states[k - 1]
                tol = tc.running(xs[k - 1:k], axis, spec.dtype, 1, float(np.max(np.abs(st.var))))
            else:  # declared dropped: the statistics as loaded, bit for bit
                mean_ref, var_ref, eager_st = st.mean, st.var, st
                tol = tl.exact("declared: the path does not move the running statistics")
            _both(rec, "compiled_running_mean_vs_eager", "compiled_running_mean_vs_oracle", after.mean,
                  eager_st.mean, mean_ref, tol, facts.agreement, decl, {**extra, "steps": k})
            _both(rec, "compiled_running_var_vs_eager", "compiled_running_var_vs_oracle", after.var,
                  eager_st.var, var_ref, tol, facts.agreement, decl, {**extra, "steps": k})


def _eval_kind(run, last, x, spec, tol_running, tol_batch) -> str:
    """What the inference-mode call normalized with: "running" or "batch" statistics, or the path's error."""
    if "eval" in run.errors:
        return run.errors["eval"]
    cands = {"batch": ref.forward_train(x, last.scale, last.offset, spec.eps, spec.channel_axis)[0]}
    if last.mean is not None:
        cands["running"] = ref.forward_inference(x, last.scale, last.offset, last.mean, last.var, spec.eps,
                                                 spec.channel_axis)
    tol = tl.Tol(max(tol_running.atol, tol_batch.atol), 0.0, "the larger of the two modes' bounds")
    return ch.classify(run.eval_output, cands, tol)


def test_compiled_mode_switch(case, rec):
    """Inference mode asked for after the first (training) call: what the path normalizes with, and its output."""
    lane, paths = _paths(case)
    inp = cr.inputs(case)
    eager = cr.eager(case, inp)
    spec, x = inp.spec, inp.batches[-1]
    for path, decl in paths:
        facts, run = decl.value, cr.path_run(lane, case, path, inp)
        extra = {"path": path, "how": facts.how}
        last = inp.state if "train" in run.errors else run.states[-1]  # the statistics where the path keeps them
        y_run = ref.forward_inference(x, last.scale, last.offset, last.mean, last.var, spec.eps, spec.channel_axis) \
            if last.mean is not None else None
        y_batch = ref.forward_train(x, last.scale, last.offset, spec.eps, spec.channel_axis)[0]
        tol_run = tc.output(x, spec.channel_axis, y_run if y_run is not None else y_batch, last.scale, spec.eps,
                            spec.dtype, normalize_var=last.var if y_run is not None else None)
        tol_batch = tc.output(x, spec.channel_axis, y_batch, last.scale, spec.eps, spec.dtype)
        ch.equal(rec, "compiled_eval_switch", facts.eval_switch, _eval_kind(run, last, x, spec, tol_run, tol_batch),
                 source=decl.source, extra=extra)
        if "eval" in run.errors or facts.eval_switch not in ("running", "batch"):
            continue
        y_ref, tol = (y_run, tol_run) if facts.eval_switch == "running" else (y_batch, tol_batch)
        # eager after the same steps: its running statistics where the path kept them updated, else its batch mode
        y_eager = eager.eval_output if facts.eval_switch == "running" else eager.train_outputs[-1]
        if facts.running_stats == "per-step" and facts.eval_switch == "running":
            y_eager = cr.eager_per_step(case, inp).eval_output
        elif facts.running_stats.startswith("first-") and facts.eval_switch == "running":
            y_eager = cr.eager_eval_after(case, inp, cr.first_n(facts.running_stats))
        elif facts.running_stats not in ("updated", "passed", "per-step") and \
                not facts.running_stats.startswith("first-") and facts.eval_switch == "running":
            y_eager = eager.eval_at_start[-1]
        _both(rec, "compiled_eval_output_vs_eager", "compiled_eval_output_vs_oracle", run.eval_output, y_eager, y_ref,
              tol, facts.agreement, decl, extra)


def test_compiled_gradients(case, rec):
    """Gradients of sum(y * dy) through the batch statistics from the path's first training call."""
    lane, paths = _paths(case)
    inp = cr.inputs(case)
    eager = cr.eager(case, inp)
    spec, st, x, dy = inp.spec, inp.state, inp.batches[0], inp.dy
    by_mode = {"batch": ref.backward_train(x, dy, st.scale, spec.eps, spec.channel_axis),
               "running": ref.backward_inference(x, dy, st.scale, st.mean, st.var, spec.eps, spec.channel_axis)}
    tols = {"batch": tc.backward(x, dy, spec.channel_axis, by_mode["batch"][0], st.scale, spec.eps, spec.dtype),
            "running": tc.backward(x, dy, spec.channel_axis, by_mode["running"][0], st.scale, spec.eps, spec.dtype,
                                   running_mean=st.mean, running_var=st.var)}
    props = {"dx": ("compiled_dx_vs_eager", "compiled_dx_vs_oracle"),
             "dscale": ("compiled_dscale_vs_eager", "compiled_dscale_vs_oracle"),
             "doffset": ("compiled_doffset_vs_eager", "compiled_doffset_vs_oracle")}
    for path, decl in paths:
        facts, run = decl.value, cr.path_run(lane, case, path, inp)
        extra = {"path": path, "how": facts.how}
        observed = "yes" if run.grads is not None else run.errors.get("grads", run.errors.get("train", "none"))
        if observed == "none" and facts.grads == "not observable":
            observed = "not observable"  # a fit step keeps its gradients to itself
        ch.equal(rec, "compiled_grads", facts.grads, observed, source=decl.source, extra=extra)
        if run.grads is None:
            continue
        mode = facts.train_normalizes  # a mode baked in at export differentiates that mode
        expected, tol = by_mode[mode], tols[mode]
        eager_grads = eager.grads if mode == "batch" else eager.inference_grads
        if "jacrev" in facts.how:
            tol = tc.jacobian_contraction(tol, x, dy, spec.channel_axis, st.scale, spec.eps, spec.dtype)
        for i, name in enumerate(("dx", "dscale", "doffset")):
            _both(rec, *props[name], getattr(run.grads, name), getattr(eager_grads, name), expected[i], tol[name],
                  facts.agreement, decl, {**extra, "mode": mode})


def test_compiled_cumulative_average(case, rec):
    """momentum=None through the path: the running statistics are the mean of every batch's, and the step counter
    counts the steps."""
    case.needs("cumulative_average", "cumulative moving average (momentum=None)")
    lane, paths = _paths(case)
    inp = cr.inputs(case, momentum=None)
    eager = cr.eager(case, inp)
    spec, st, xs, axis = inp.spec, inp.state, inp.batches, inp.spec.channel_axis
    estimator = case.decl.estimator_for(eager.code_path)
    ran = False
    for path, decl in paths:
        facts = decl.value
        if facts.cumulative == "n/a":
            continue
        ran = True
        run = cr.path_run(lane, case, path, inp, grads=False)
        extra = {"path": path, "how": facts.how}
        ch.equal(rec, "compiled_cumulative_runs", facts.cumulative, run.errors.get("train", "yes"),
                 source=decl.source, extra=extra)
        if "train" in run.errors:
            continue
        ch.equal(rec, "compiled_steps_tracked", len(xs), run.steps_tracked, source=decl.source, extra=extra)
        for k in sorted({1, len(xs)}):
            mean_ref, var_ref = ref.train_steps(xs[:k], st.mean, st.var, None, estimator, axis)
            tol = tc.running(xs[:k], axis, spec.dtype, k, float(np.max(np.abs(st.var))))
            after, eager_st = run.states[k - 1], eager.states[k - 1]
            _both(rec, "compiled_cumulative_running_mean_vs_eager", "compiled_cumulative_running_mean_vs_oracle",
                  after.mean, eager_st.mean, mean_ref, tol, facts.agreement, decl, {**extra, "steps": k})
            _both(rec, "compiled_cumulative_running_var_vs_eager", "compiled_cumulative_running_var_vs_oracle",
                  after.var, eager_st.var, var_ref, tol, facts.agreement, decl, {**extra, "steps": k})
    if not ran:
        pytest.skip(f"{case.adapter.id}: no compiled path declares momentum=None")


def test_compiled_path_facts(case, rec):
    """Each path's declared facts (the batch-norm op an exported graph holds, the buffer mutations in its signature,
    whether anything was compiled, ...) against what the run observed."""
    lane, paths = _paths(case)
    inp = cr.inputs(case)
    for path, decl in paths:
        run = cr.path_run(lane, case, path, inp)
        for name, value in decl.value.facts.items():
            ch.equal(rec, "compiled_path_fact", value, run.facts.get(name, "not observed"), source=decl.source,
                     extra={"path": path, "fact": name, "how": decl.value.how})


def test_compiled_freeze(case, rec):
    """The adapter's freeze idioms under the compiler: one forward and one SGD step give eager's output, running
    statistics and parameters."""
    lane, paths = _paths(case)
    inp = cr.inputs(case)
    ran = False
    for path, decl in paths:
        for idiom in decl.value.freeze:
            ran = True
            (y, after), (y_eager, after_eager) = cr.frozen(lane, case, path, idiom, inp)
            x = inp.batches[0]
            spec, st = inp.spec, inp.state
            # the batch-statistics bound (the larger one) at the size of eager's output, whichever mode the idiom keeps
            tol = tc.vs_eager(tc.output(x, spec.channel_axis, y_eager, st.scale, spec.eps, spec.dtype),
                              decl.value.agreement)
            extra = {"path": path, "idiom": idiom, "how": decl.value.how}
            ch.close(rec, "compiled_freeze_output_vs_eager", y, y_eager, tol, declared="eager frozen_step",
                     source=decl.source, extra=extra)
            tol_st = tc.vs_eager(tc.running([x], spec.channel_axis, spec.dtype, 1, float(np.max(np.abs(st.var)))),
                                 decl.value.agreement)
            for field in ("mean", "var"):
                ch.close(rec, "compiled_freeze_running_stats_vs_eager", getattr(after, field),
                         getattr(after_eager, field), tol_st, declared="eager frozen_step", source=decl.source,
                         extra={**extra, "field": field})
            tols = tc.backward(x, inp.dy, spec.channel_axis, ref.backward_train(x, inp.dy, st.scale, spec.eps,
                               spec.channel_axis)[0], st.scale, spec.eps, spec.dtype)
            for field, gname in (("scale", "dscale"), ("offset", "doffset")):
                t = tols[gname]
                tol_p = tc.vs_eager(tl.Tol(cr.LR * t.atol, t.rtol, f"lr x ({t.why})"), decl.value.agreement)
                ch.close(rec, "compiled_freeze_params_vs_eager", getattr(after, field), getattr(after_eager, field),
                         tol_p, declared="eager frozen_step", source=decl.source, extra={**extra, "field": field})
    if not ran:
        pytest.skip(f"{case.adapter.id}: no compiled path declares freeze idioms")
