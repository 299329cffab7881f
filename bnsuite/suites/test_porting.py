"""Porting BN state between frameworks, for every ordered pair (source -> this adapter).

The source model is described by its framework's DECLARATION (its defaults, momentum convention and estimator) and
simulated by the oracle; the source's real framework is checked against the same oracle in its own process (core
suites), so agreement here means agreement with the real source. The target is the real framework in this process.

* correct port (adapters/porting.py): inference and training outputs equal the source's, and so do the running
  statistics after 1, 5 and 20 steps, except that the running variance differs by exactly the predicted amount where
  one framework feeds it the unbiased and the other the biased estimator;
* naive port (copy the four vectors, keep the target's defaults): the error against the source is recorded per pair,
  and the target must still do what the oracle predicts for those defaults.
"""

import numpy as np

from bnsuite.adapters import porting
from bnsuite.adapters import reference as ref
from bnsuite.adapters import registry
from bnsuite.adapters.base import Spec
from bnsuite.suites import checks as ch
from bnsuite.suites import data
from bnsuite.suites import tolerances as tl

STEPS = (1, 5, 20)
RANK = 4


def _to_layout(x, from_last: bool, to_last: bool):
    if from_last == to_last:
        return x
    return np.moveaxis(x, 1, -1) if to_last else np.moveaxis(x, -1, 1)


def _oracle_run(xs, state, eps, momentum, estimator, axis):
    """Inference output on xs[0] before training, and running stats after each step."""
    y_inf = ref.forward_inference(xs[0], state.scale, state.offset, state.mean, state.var, eps, axis)
    stats, mean, var = [], state.mean, state.var
    for i, x in enumerate(xs):
        mean, var = ref.update_running(mean, var, ref.moments(x, axis), momentum, estimator, i + 1)
        stats.append((mean, var))
    return y_inf, stats


def _run_target(bn, xs, state, s_last, b_last):
    bn.set_state(state)
    y_inf = _to_layout(bn.forward(_to_layout(xs[0], s_last, b_last), training=False), b_last, s_last)
    y_train, stats = None, []
    for x in xs:
        y = _to_layout(bn.forward(_to_layout(x, s_last, b_last), training=True), b_last, s_last)
        y_train = y if y_train is None else y_train
        st = bn.get_state()
        stats.append((st.mean, st.var))
    return y_inf, y_train, stats


def test_port_from_every_framework(case, rec):
    """Every source framework ported into this one. One test per target (not per pair), so that `-k torch` selects
    the torch target without pulling every other framework in; each pair's checks and its matrix record name the
    source, and one failing pair does not hide the others."""
    for source_id in registry.BUILTIN:
        _port_pair(case, rec, source_id)


def _port_pair(case, rec, source_id):
    src = registry.load(source_id).declare()
    dst = case.decl
    s_last, b_last = src.default_channels_last.value, dst.default_channels_last.value
    eps_s, mom_s = porting.defaults(src)
    base = Spec(rank=RANK, channels_last=s_last, dtype=case.dtype)
    state = data.state(base)
    portable = porting.export(src, eps_s, mom_s, s_last, state)
    target = porting.import_(dst, portable)
    xs = data.batches(base, max(STEPS))
    axis = base.channel_axis
    est_s = porting.estimator_on(src, RANK)

    # The correct port: the adapter receives the canonical momentum and converts it like porting.import_ says.
    spec_b = case.spec(rank=RANK, channels_last=b_last, eps=portable.eps, momentum=portable.momentum)
    bn = case.build(spec_b)
    rec.snippet = bn.snippet()
    est_b = dst.estimator_for(bn.code_path(_to_layout(xs[0], s_last, b_last).shape))
    hp = bn.hyperparameters()
    y_inf, y_train, stats = _run_target(bn, xs, state, s_last, b_last)
    o_inf, o_stats = _oracle_run(xs, state, eps_s, portable.momentum, est_s, axis)
    _, o_stats_b = _oracle_run(xs, state, eps_s, portable.momentum, est_b, axis)
    o_train, _ = ref.forward_train(xs[0], state.scale, state.offset, eps_s, axis)

    extra = {"source_adapter": source_id, "target_momentum": target["momentum"], "source_momentum": mom_s,
             "source_estimator": est_s, "target_estimator": est_b}
    worst = {"inference": float(np.max(np.abs(y_inf - o_inf))), "training": float(np.max(np.abs(y_train - o_train)))}
    ch.close(rec, "port_momentum_conversion", hp["momentum"], target["momentum"],
             tl.hyperparameter_round_trip(), declared=f"{source_id} momentum {mom_s} -> "
             f"{case.adapter.id} momentum {target['momentum']:g}", source=dst.momentum_weights.source, extra=extra)
    ch.close(rec, "port_inference_output", y_inf, o_inf,
             tl.bn_output(xs[0], axis, o_inf, state.scale, eps_s, io_dtype=case.dtype, normalize_var=state.var),
             declared=f"{source_id} inference output", extra=extra)
    ch.close(rec, "port_training_output", y_train, o_train,
             tl.bn_output(xs[0], axis, o_train, state.scale, eps_s, io_dtype=case.dtype),
             declared=f"{source_id} training output", extra=extra)
    for k in STEPS:
        tol = tl.running_stats(xs[:k], axis, stats_dtype=case.dtype, steps=k,
                               state_scale=float(np.max(np.abs(state.var))))
        mean, var = stats[k - 1]
        o_mean, o_var = o_stats[k - 1]
        predicted_gap = o_stats_b[k - 1][1] - o_var  # zero where the two estimators agree
        worst[f"running_var_k{k}"] = float(np.max(np.abs(var - o_var)))
        ch.close(rec, "port_running_mean", mean, o_mean, tol, declared=f"{source_id} running mean after {k}",
                 extra={**extra, "steps": k})
        ch.close(rec, "port_running_var", var, o_var + predicted_gap, tol,
                 declared=(f"{source_id} running var after {k}" if est_s == est_b else
                           f"{source_id} running var after {k} + predicted {est_b}-vs-{est_s} gap "
                           f"{float(np.max(np.abs(predicted_gap))):.3g}"),
                 extra={**extra, "steps": k, "predicted_gap": float(np.max(np.abs(predicted_gap)))})

    # The naive port: copy the vectors, keep the target's defaults.
    naive = case.build(case.spec(rank=RANK, channels_last=b_last, use_defaults=True))
    eps_b, mom_b = porting.defaults(dst)
    n_inf, _, n_stats = _run_target(naive, xs[:5], state, s_last, b_last)
    p_inf, p_stats = _oracle_run(xs[:5], state, eps_b, porting.canonical_momentum(dst, mom_b), est_b, axis)
    tol5 = tl.running_stats(xs[:5], axis, stats_dtype=case.dtype, steps=5,
                            state_scale=float(np.max(np.abs(state.var))))
    ch.close(rec, "naive_port_inference_output", n_inf, p_inf,
             tl.bn_output(xs[0], axis, p_inf, state.scale, eps_b, io_dtype=case.dtype, normalize_var=state.var),
             declared=f"oracle with {case.adapter.id} defaults", extra=extra)
    ch.close(rec, "naive_port_running_var", n_stats[4][1], p_stats[4][1], tol5,
             declared=f"oracle with {case.adapter.id} defaults", extra={**extra, "steps": 5})
    naive_inf_err = float(np.max(np.abs(n_inf - o_inf)))
    naive_var_err = float(np.max(np.abs(n_stats[4][1] - o_stats[4][1]) / np.abs(o_stats[4][1])))
    if rec.writer is not None:
        rec.writer.write("matrix", name="port", source=source_id, target=case.adapter.id, device=case.device,
                         dtype=case.dtype, correct_port_max_abs=max(worst.values()), **worst,
                         naive_inference_max_abs=naive_inf_err, naive_running_var_k5_max_rel=naive_var_err,
                         source_eps=eps_s, target_default_eps=eps_b, source_momentum=mom_s,
                         target_momentum=target["momentum"], target_default_momentum=mom_b,
                         source_estimator=est_s, target_estimator=est_b)
