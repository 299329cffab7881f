"""Multi-replica BatchNorm: the batch split over N replicas of the framework's real distributed engine.

Each adapter's engine (adapters/replicas) runs every idiom in one worker process; the checks below compare its arrays
with the sharded float64 oracle (reference.forward_train_replicas, running_replicas, backward_train_replicas):
what each replica normalizes with (its own shard, or the global batch), what each replica's running statistics become
after k steps and whether they agree across replicas, the gradient under synchronization (cross-replica terms), and
uneven / one-sample / empty shards. Ids: test_replica_forward[torch-cpu-float32-ddp_broadcast_buffers-N2].
"""

import numpy as np
import pytest

from bnsuite.adapters import capabilities
from bnsuite.adapters import reference as ref
from bnsuite.adapters import replicas as rp
from bnsuite.suites import checks as ch
from bnsuite.suites import tolerances as tl
from bnsuite.suites.replica_cases import Runs, engine, idioms_of

AXIS = 1  # the plan's batches are (batch, C)
NORMALIZE_RULES = ("local", "global", "pairs")
PER_CASE = {"replica_idiom": idioms_of}


@pytest.fixture(scope="module")
def replica_runs():
    return Runs()


def _facts(case, idiom):
    cited = engine(case.adapter).declare().idioms[idiom]
    return cited.value, cited.source


def _run(case, rec, runs, idiom):
    """The engine's arrays, or None after recording why the worker gave none (timeout, crash)."""
    res = runs.get(case.adapter)
    ch.equal(rec, "replica_worker_finished", "finished", "finished" if res.error is None else res.error,
             source="adapters/replicas: run_worker (timeout, own process group)",
             extra={"engine": capabilities.named(case.adapter)["replicas"], "wall_s": round(res.wall_s, 2)})
    if res.error is not None:
        return None
    skipped = res.text(f"{idiom}/skipped")
    if skipped:
        pytest.skip(f"{case.adapter.id} {idiom}: {skipped}")
    return res


def _canonical(rule: str, n: int) -> str:
    """The first rule name with the same replica groups at this N ("pairs" of 2 replicas is "global")."""
    if rule not in NORMALIZE_RULES:
        return rule
    return next(r for r in NORMALIZE_RULES if ref.replica_groups(r, n) == ref.replica_groups(rule, n))


def _rules(n: int, extra=()) -> list[str]:
    return list(dict.fromkeys(_canonical(r, n) for r in (*NORMALIZE_RULES, *extra)))


def _widest(tols) -> tl.Tol:
    worst = max(tols, key=lambda t: t.atol)
    return tl.Tol(worst.atol, max(t.rtol for t in tols), worst.why)


def _separable(tol: tl.Tol, candidates: dict, what: str) -> None:
    vals = list(candidates.values())
    scale = max(float(np.max(np.abs(v))) for v in vals)
    gap = min(float(np.max(np.abs(a - b))) for i, a in enumerate(vals) for b in vals[i + 1:]) if len(vals) > 1 else 1
    tl.assert_separable((tol.atol + tol.rtol * scale) / scale, gap / scale, what)


def _outcome_ok(res, key, facts, case, idiom):
    outcome = res.text(f"{key}/outcome")
    if outcome != "ok" or facts.normalizes.startswith("error:"):
        pytest.skip(f"{case.adapter.id}: {idiom} declares {facts.normalizes} and raised {outcome} "
                    "(replica_outcome checks it)")


def _applies(facts, n, case, idiom):
    if n not in facts.replica_counts:
        pytest.skip(f"{case.adapter.id}: {idiom} applies to N in {facts.replica_counts}")


def _run_for(case, rec, runs, idiom, facts, replicas):
    """The engine's arrays for N = `replicas` (the case skips where the idiom does not apply), or None (see _run)."""
    _applies(facts, replicas, case, idiom)
    return _run(case, rec, runs, idiom)


def _classified(rec, prop, per_replica, cands, tols, rule, n, what, source, extra) -> str:
    """Check `prop`: the rule whose oracle (`cands`, the replicas' arrays concatenated) the engine's per-replica arrays
    match, within the widest of every candidate's per-replica bounds (`tols`), which must separate the candidates, is
    the declared `rule`. Returns the declared rule's name at this N."""
    __tracebackhide__ = True
    tol = _widest([t for ts in tols.values() for t in ts])
    _separable(tol, cands, what)
    observed = ch.classify(per_replica.reshape(-1, per_replica.shape[-1]), cands, tol)
    declared = _canonical(rule, n)
    ch.equal(rec, prop, declared, observed, source=source, extra=extra,
             max_abs_err=float(np.max(np.abs(per_replica.reshape(cands[declared].shape) - cands[declared]))))
    return declared


def _pooled(parts, sizes, rule, r):
    if rule == "unweighted":
        return np.concatenate(parts, axis=0)
    group = next(g for g in ref.replica_groups(rule, len(sizes)) if r in g)
    return np.concatenate([parts[i] for i in group], axis=0)


@pytest.mark.parametrize("replicas", rp.REPLICA_COUNTS, ids=lambda n: f"N{n}")
def test_replica_forward(case, rec, replica_idiom, replicas, replica_runs):
    facts, source = _facts(case, replica_idiom)
    res = _run_for(case, rec, replica_runs, replica_idiom, facts, replicas)
    if res is None:
        return
    n, key, p = replicas, f"{replica_idiom}/N{replicas}", rp.plan()
    extra = {"idiom": replica_idiom, "replicas": n, "how": facts.how}
    declared_outcome = facts.normalizes if facts.normalizes.startswith("error:") else "ok"
    observed_outcome = res.text(f"{key}/outcome")
    ch.equal(rec, "replica_outcome", declared_outcome, observed_outcome, source=source, extra=extra)
    if facts.error:  # the refusal's declared message, first line
        ch.equal(rec, "replica_error_message", facts.error, res.text(f"{key}/error"), source=source, extra=extra)
    if observed_outcome != "ok" or declared_outcome != "ok":
        return
    sizes, x = rp.even_sizes(n), p["xs"][0]
    y = res.get(f"{key}/y")
    variance = "two-pass" if case.decl.variance_algorithm.value == "two-pass" else "one-pass"
    cands, tols = {}, {}
    for rule in _rules(n, (facts.normalizes,)):
        ys = ref.forward_train_replicas(x, sizes, rule, p["scale"], p["offset"], rp.EPS, AXIS)
        cands[rule] = np.concatenate(ys)
        parts = ref.split_batch(x, sizes)
        pooled = [_pooled(parts, sizes, rule, r) for r in range(n)]  # what replica r's statistics are taken over
        tols[rule] = [tl.replica_output(q, AXIS, np.concatenate(ref.forward_train_replicas(
                          q, (len(q),), "global", p["scale"], p["offset"], rp.EPS, AXIS)),
                                        p["scale"], rp.EPS, dtype="float32", variance=variance) for q in pooled]
    declared = _classified(rec, "replica_normalizes_with", y, cands, tols, facts.normalizes, n,
                           "local from global statistics", source, extra)
    expected = ref.forward_train_replicas(x, sizes, declared, p["scale"], p["offset"], rp.EPS, AXIS)
    for r in range(n):
        ch.close(rec, "replica_forward", y[r], expected[r], tols[declared][r],
                 declared=f"oracle, {declared} statistics", source=source, extra={**extra, "replica": r})


@pytest.mark.parametrize("steps", rp.STEPS, ids=lambda k: f"k{k}")
@pytest.mark.parametrize("replicas", rp.REPLICA_COUNTS, ids=lambda n: f"N{n}")
def test_replica_running_stats(case, rec, replica_idiom, replicas, steps, replica_runs):
    facts, source = _facts(case, replica_idiom)
    res = _run_for(case, rec, replica_runs, replica_idiom, facts, replicas)
    if res is None:
        return
    n, key, p = replicas, f"{replica_idiom}/N{replicas}", rp.plan()
    _outcome_ok(res, key, facts, case, replica_idiom)
    extra = {"idiom": replica_idiom, "replicas": n, "steps": steps, "how": facts.how}
    sizes, batches = rp.even_sizes(n), list(p["xs"][:steps])
    mean, var = res.get(f"{key}/mean_k{steps}"), res.get(f"{key}/var_k{steps}")
    estimator = case.decl.estimator_for(engine(case.adapter).code_path)
    rules = _rules(n, ("broadcast0", facts.running_stats))
    cands = {rule: ref.running_replicas(batches, sizes, rule, p["mean"], p["var"], rp.MOMENTUM, estimator, AXIS)
             for rule in rules}
    every_batch = batches + [part for xb in batches for part in ref.split_batch(xb, sizes)]
    tol = tl.replica_running_stats(every_batch, AXIS, dtype="float32", steps=steps,
                                   state_scale=float(np.max(np.abs(p["var"]))))
    spread = max(float(np.max(np.abs(mean - mean[0]))), float(np.max(np.abs(var - var[0]))))
    observed_equal = bool(tol.allows(mean, np.broadcast_to(mean[0], mean.shape)).all()
                          and tol.allows(var, np.broadcast_to(var[0], var.shape)).all())
    ch.equal(rec, "replica_running_stats_equal", facts.replicas_equal, observed_equal, source=source, extra=extra,
             max_abs_err=spread)
    declared = _canonical(facts.running_stats, n)
    for r in range(n):
        exp_mean, exp_var = cands[declared][r]
        ch.close(rec, "replica_running_mean", mean[r], exp_mean, tol, declared=f"oracle, {declared} rule",
                 source=source, extra={**extra, "replica": r})
        ch.close(rec, "replica_running_var", var[r], exp_var, tol,
                 declared=f"oracle, {declared} rule, {estimator} estimator", source=source,
                 extra={**extra, "replica": r})
    if steps == max(rp.STEPS):  # after one step the broadcast rule equals the local one
        stacked = {rule: np.concatenate([np.concatenate(mv) for mv in v]) for rule, v in cands.items()}
        _separable(tol, stacked, "the running-statistic rules (local, global, broadcast from replica 0)")
        observed = ch.classify(np.concatenate([np.concatenate([mean[r], var[r]]) for r in range(n)]), stacked, tol)
        ch.equal(rec, "replica_running_stats_rule", declared, observed, source=source, extra=extra,
                 max_abs_err=spread)


@pytest.mark.parametrize("replicas", rp.REPLICA_COUNTS, ids=lambda n: f"N{n}")
def test_replica_gradients(case, rec, replica_idiom, replicas, replica_runs):
    facts, source = _facts(case, replica_idiom)
    if facts.gradient.startswith("n/a"):
        pytest.skip(f"{case.adapter.id}: {replica_idiom} declares no gradient ({facts.gradient})")
    res = _run_for(case, rec, replica_runs, replica_idiom, facts, replicas)
    if res is None:
        return
    n, key, p = replicas, f"{replica_idiom}/N{replicas}", rp.plan()
    _outcome_ok(res, key, facts, case, replica_idiom)
    extra = {"idiom": replica_idiom, "replicas": n, "how": facts.how}
    sizes, x, dy = rp.even_sizes(n), p["xs"][0], p["dy"]
    dx = res.get(f"{key}/dx")
    cands, tols = {}, {}
    parts, dparts = ref.split_batch(x, sizes), ref.split_batch(dy, sizes)
    for rule in _rules(n, (facts.gradient,)):
        cands[rule] = np.concatenate(ref.backward_train_replicas(x, dy, sizes, rule, p["scale"], rp.EPS, AXIS))
        tols[rule] = []
        for r in range(n):
            if rule == "own_loss":  # the global statistics, replica r's part of the loss only
                px, pdy = x, ref.own_dy(dy, sizes, r)
            else:
                px, pdy = _pooled(parts, sizes, rule, r), _pooled(dparts, sizes, rule, r)
            tols[rule].append(tl.replica_backward(px, pdy, AXIS, ref.backward_train(px, pdy, p["scale"], rp.EPS, AXIS)[0],
                                                  p["scale"], rp.EPS, dtype="float32"))
    declared = _classified(rec, "replica_gradient_rule", dx, cands, tols, facts.gradient, n,
                           "the local from the global backward", source, extra)
    expected = ref.backward_train_replicas(x, dy, sizes, declared, p["scale"], rp.EPS, AXIS)
    for r in range(n):
        ch.close(rec, "replica_dx", dx[r], expected[r], tols[declared][r], declared=f"oracle, {declared} backward",
                 source=source, extra={**extra, "replica": r})


@pytest.mark.parametrize("shard_case", list(rp.SHARD_CASES))
def test_replica_shards(case, rec, replica_idiom, shard_case, replica_runs):
    facts, source = _facts(case, replica_idiom)
    res = _run(case, rec, replica_runs, replica_idiom)
    if res is None:
        return
    sizes, key, p = rp.SHARD_CASES[shard_case], f"{replica_idiom}/{shard_case}", rp.plan()
    extra = {"idiom": replica_idiom, "shards": list(sizes), "how": facts.how}
    declared, observed = getattr(facts, shard_case), res.text(f"{key}/outcome")
    if declared.startswith("n/a"):
        pytest.skip(f"{case.adapter.id}: {replica_idiom} {shard_case} shards: {declared}")
    ch.equal(rec, "replica_shard_outcome", declared, observed, source=source, extra=extra)
    if declared != "ok" or observed != "ok" or facts.normalizes not in NORMALIZE_RULES:
        return
    x = p["xs"][0]
    rule = facts.shards_normalize or _canonical(facts.normalizes, len(sizes))
    expected = ref.forward_train_replicas(x, sizes, rule, p["scale"], p["offset"], rp.EPS, AXIS)
    parts = ref.split_batch(x, sizes)
    variance = "two-pass" if case.decl.variance_algorithm.value == "two-pass" else "one-pass"
    for r, size in enumerate(sizes):
        if size == 0:
            continue
        pooled = _pooled(parts, sizes, rule, r)
        y_pooled = np.concatenate(ref.forward_train_replicas(pooled, (len(pooled),), "global", p["scale"],
                                                             p["offset"], rp.EPS, AXIS))
        tol = tl.replica_output(pooled, AXIS, y_pooled, p["scale"], rp.EPS, dtype="float32", variance=variance)
        y, want, declared = res.get(f"{key}/y{r}"), expected[r], f"oracle, {rule} statistics"
        if len(pooled) == 1:  # one value per channel: the replica behaves as the adapter declares a lone layer does
            single = case.decl.single_value_batch
            observed = ("offset" if tol.allows(y, expected[r]).all() else
                        "input unchanged" if np.array_equal(y, parts[r]) else "other")
            ch.equal(rec, "replica_shard_single_value", single.value, observed, source=single.source,
                     extra={**extra, "replica": r})
            if single.value == "input unchanged":
                want, declared = parts[r], "the replica's input, unchanged (declared single_value_batch)"
        ch.close(rec, "replica_shard_forward", y, want, tol, declared=declared, source=source,
                 extra={**extra, "replica": r})


def test_synchronized_without_strategy(case, rec, replica_runs):
    """`synchronized=True` with no distribution strategy (one replica): which running-variance estimator and which
    variance algorithm the layer uses, each against the declaration, beside the same layer with synchronized=False."""
    decl = engine(case.adapter).declare()
    if not decl.without_strategy:
        pytest.skip(f"{case.adapter.id}: its engine declares no synchronized layer without a strategy")
    res = _run(case, rec, replica_runs, "no_strategy")
    if res is None:
        return
    p, axis = rp.plan(), 3  # NHWC
    m = ref.moments(p["x4"], axis)
    var_tol = tl.running_stats([p["x4"]], axis, stats_dtype="float32", steps=1,
                               state_scale=float(np.max(np.abs(p["var"]))))
    tl.assert_separable(var_tol.rtol + var_tol.atol / float(np.min(m.var_biased)), 1.0 / (m.n - 1),
                        "the biased from the unbiased estimator")
    y_ref = ref.forward_train(p["hard4"], p["scale"], p["offset"], rp.EPS, axis)[0]
    two_pass = tl.bn_output(p["hard4"], axis, y_ref, p["scale"], rp.EPS, io_dtype="float32", variance="two-pass")
    for sync in (False, True):
        extra = {"synchronized": sync, "strategy": "none"}
        est = decl.without_strategy[f"estimator:{sync}"]
        observed = ch.classify(res.get(f"no_strategy/{sync}/var"),
                               {"biased": m.var_biased, "unbiased": m.var_unbiased}, var_tol)
        ch.equal(rec, "synchronized_no_strategy_estimator", est.value, observed, source=est.source, extra=extra)
        alg = decl.without_strategy[f"variance:{sync}"]
        y = res.get(f"no_strategy/{sync}/hard_y")
        err = float(np.max(np.abs(y - y_ref)))
        # Within the two-pass bound on a mean 1e4 times the spread: two-pass; beyond it: a one-pass formula.
        observed = "two-pass" if bool(two_pass.allows(y, y_ref).all()) else "one-pass"
        ch.equal(rec, "synchronized_no_strategy_variance", alg.value.split("-clamped")[0].split("-unclamped")[0],
                 observed, source=alg.source, extra={**extra, "declared_algorithm": alg.value,
                                                     "two_pass_atol": two_pass.atol}, max_abs_err=err)
