"""Deploying: a lone BatchNorm and the conv-BN network, trained a few steps in the framework, exported (torch.onnx,
Keras' ONNX export, tf2onnx, OpenVINO's converter, TensorFlow's LiteRT converter) and run in ONNX Runtime
(optimizations off and on), ONNX's reference evaluator, OpenVINO and LiteRT.

Each run is checked against the framework's own output AND the float64 oracle, in the statistics the export is
declared to normalize with; each ONNX export's BatchNormalization node against the declared eps, momentum and
training_mode, its stored running statistics against the model's, and its batch dimension against dynamic; a
training-mode run's running statistics against the ONNX convention and the source framework's. Rows of the report's
"deploying" table are written as "matrix" records (deploy, deploy_export).
"""

from __future__ import annotations

import numpy as np
import pytest

from bnsuite.adapters import capabilities
from bnsuite.lanes import deploy as dl
from bnsuite.suites import checks, deploy_cases as dc, summaries
from bnsuite.suites import tolerances_deploy as td

ROWS: list[dict] = []  # one per run, for the terminal summary
COST: dict[str, dict[str, float]] = {}  # adapter -> step kind -> seconds


PER_CASE = {"route": dc.routes_of, "export": dc.exports_of}


def pytest_generate_tests(metafunc):
    if "model" in metafunc.fixturenames:
        metafunc.parametrize("model", dl.MODELS)


@pytest.fixture(scope="module")
def sessions():
    made: dict[str, dc.Session] = {}
    yield made
    for adapter_id, s in made.items():
        COST[adapter_id] = dict(s.cost)
        s.close()


def session_for(case, sessions, step) -> dc.Session:
    lane_cls = capabilities.require(case.adapter, "deploy")
    if step is None or step not in (lane_cls.routes if isinstance(step, dl.Route) else
                                    [r.export for r in lane_cls.routes]):
        pytest.skip(f"{case.adapter.id}: its deploy lane ({lane_cls.__name__}) has no "
                    f"{'route' if isinstance(step, dl.Route) else 'export'} {step}")
    steps = (step.exporter, step.runtime) if isinstance(step, dl.Route) else (step[0],)
    missing = dl.missing_packages(*steps)
    if missing:
        pytest.skip(f"{', '.join(dict.fromkeys(missing))} not installed: {' and '.join(steps)} cannot run here "
                    "(pinned in requirements/all.txt, extra 'deploy'; docs/deploy.md)")
    if case.adapter.id not in sessions:
        sessions[case.adapter.id] = dc.Session(lane_cls(case.adapter))
    return sessions[case.adapter.id]


def _step(fn, *args):
    try:
        return fn(*args)
    except dc.StepFailed as e:
        pytest.fail(str(e), pytrace=False)


def _ops_folded(info: dict) -> str:
    """What runs in place of BatchNorm, read from the executed ops: a BatchNorm op; a conv with no per-channel
    multiply left (folded into it); else a multiply and add (after a conv, or alone)."""
    ops = [str(o) for o in info.get("runtime_ops") or info.get("ops") or []]
    if any("batchnorm" in o.lower() for o in ops):
        return "BatchNorm kept"
    conv = any(o.upper() in ("CONV", "CONV_2D", "CONVOLUTION", "FUSEDCONV") for o in ops)
    multiply = any(o.upper() in ("MUL", "MULTIPLY", "ELTWISE") for o in ops)
    return "folded" if conv and not multiply else "elementwise"


def test_deploy_output(case, rec, sessions, model, route):
    s = session_for(case, sessions, route)
    decl = s.lane.declared(route.exporter, route.mode, model)
    trained = _step(s.model, model, route.mode.endswith("frozen"))
    exp = _step(s.export, model, route.exporter, route.mode)
    out, out_small, info = _step(s.run, model, route)
    y, y_small = out[0], out_small[0]
    rec.snippet = f"# {route.exporter} ({route.mode}) -> {route.runtime}: {exp.path.rsplit('/', 1)[-1]}"
    batch = decl.statistics.value == "batch"
    dtype = td.compute_dtype(info.get("precision", "float32") if route.mode != "int8" else "float32",
                             decl.precision.value if decl.precision.value != "int8" else "float32")
    ys, tols = {}, {}
    for stats in ("running", "batch"):
        y_ref, net = dc.oracle(model, trained.weights, s.x, stats == "batch")
        if model == "layer":
            t = td.layer_vs_oracle(s.x, y_ref, trained.weights, dl.EPS, dtype=dtype, batch_stats=stats == "batch")
        else:
            t = td.net_vs_oracle(net, dtype=dtype, batch_stats=stats == "batch")
        if decl.precision.value == "int8":
            t = td.int8_layer(s.x, y_ref, trained.weights, dl.EPS) if model == "layer" else \
                td.int8_net(net, s.x, trained.weights, dl.EPS)
        ys[stats], tols[stats] = y_ref, t
    stats = decl.statistics.value
    y_fw = s.back(trained, model, trained.train_output(s.feed(trained, s.x)) if batch else
                  trained.infer(s.feed(trained, s.x)))
    y_fw_small = s.back(trained, model, trained.train_output(s.feed(trained, s.x_small)) if batch else
                        trained.infer(s.feed(trained, s.x_small)))
    _, net32 = dc.oracle(model, trained.weights, s.x, batch)
    fw_tol = td.layer_vs_oracle(s.x, ys[stats], trained.weights, dl.EPS, dtype="float32", batch_stats=batch) \
        if model == "layer" else td.net_vs_oracle(net32, dtype="float32", batch_stats=batch)
    extra = {"route": route.id, "model": model, "runtime_precision": info.get("precision")}
    observed_stats = dc.statistics_used(y, ys, tols[stats])
    checks.equal(rec, "deploy_normalizes_with", stats, observed_stats, source=decl.statistics.source, extra=extra)
    checks.close(rec, "deploy_output_vs_oracle", y, ys[stats], tols[stats],
                 declared=f"oracle ({stats} statistics)", extra=extra)
    checks.close(rec, "deploy_output_vs_framework", y, y_fw, td.vs_framework(tols[stats], fw_tol),
                 declared=f"{case.adapter.id}'s own output ({stats} statistics)", extra=extra)
    small_ref = dc.oracle(model, trained.weights, s.x_small, batch)
    small_tol = td.vs_framework(tols[stats], fw_tol) if not batch else \
        td.vs_framework(*(td.layer_vs_oracle(s.x_small, small_ref[0], trained.weights, dl.EPS, dtype=d,
                                             batch_stats=True) if model == "layer" else
                          td.net_vs_oracle(small_ref[1], dtype=d, batch_stats=True) for d in (dtype, "float32")))
    if decl.precision.value == "int8":
        small_tol = tols[stats]
    checks.close(rec, "deploy_dynamic_batch", y_small, y_fw_small, small_tol,
                 declared=f"{case.adapter.id}'s own output at batch size {dc.SMALL_BATCH}", extra=extra)
    folding = s.lane.declared_folding(route, model)
    if folding is not None:
        checks.equal(rec, "deploy_runtime_folding", folding.value, _ops_folded(info), source=folding.source,
                     extra={**extra, "ops": ",".join(map(str, info.get("runtime_ops") or info.get("ops") or []))[:300]})
    row = dict(adapter=case.adapter.id, model=model, exporter=route.exporter, mode=route.mode,
               runtime=route.runtime, declared_statistics=stats, observed_statistics=observed_stats,
               err_oracle=float(np.max(np.abs(y - ys[stats]))), tol_oracle=tols[stats].atol,
               err_framework=float(np.max(np.abs(y - y_fw))),
               precision=str(info.get("precision")) + ("" if decl.precision.value == "float32" else
                                                      f", {decl.precision.value} model"),
               folding=_ops_folded(info), runtime_version=str(info.get("version")),
               passed=all(c.get("passed", True) for c in rec.checks))
    if exp.bn_outputs:
        facts = _facts(exp.path)
        bn_in = s.x if model == "layer" else dc.bn_input(trained.weights, s.x)
        cands = dc.running_stats_after(bn_in, facts["mean"], facts["var"], dl.MOMENTUM)
        rs_tol = td.running_stats_step(bn_in, float(max(np.max(np.abs(facts["var"])), np.max(np.abs(facts["mean"])))))
        observed = checks.classify(out[2], {k: v[1] for k, v in cands.items()}, rs_tol)
        checks.equal(rec, "deploy_runtime_running_var_estimator", dc.ONNX_TRAINING_ESTIMATOR.value, observed,
                     source=dc.ONNX_TRAINING_ESTIMATOR.source,
                     extra={**extra, "source_framework_estimator": s.lane.source_estimator.value})
        checks.close(rec, "deploy_runtime_running_mean", out[1], cands["biased"][0], rs_tol,
                     declared=f"the source's momentum {dl.MOMENTUM} on the batch mean", extra=extra)
        row.update(running_var=observed, source_estimator=s.lane.source_estimator.value)
    ROWS.append(row)
    if rec.writer is not None:
        rec.writer.write("matrix", name="deploy", test=rec.base["test"], device=case.device, **row)


def _facts(path):
    from bnsuite.lanes.deploy.inspect_onnx import bn_facts

    return bn_facts(path)


def test_deploy_export_facts(case, rec, sessions, model, export):
    s = session_for(case, sessions, export)
    exporter, mode = export
    decl = s.lane.declared(exporter, mode, model)
    trained = _step(s.model, model, mode.endswith("frozen"))
    exp = _step(s.export, model, exporter, mode)
    if exp.fmt != "onnx":
        pytest.skip(f"{exporter} writes {exp.fmt}, not ONNX: no BatchNormalization node to read; its folding and "
                    "precision come from the runtime (test_deploy_output)")
    f = _facts(exp.path)
    extra = {"export": f"{exporter}-{mode}", "model": model}
    node = "BatchNormalization" if f["bn_nodes"] else "none"
    checks.equal(rec, "deploy_bn_node", decl.bn_node.value, node, source=decl.bn_node.source,
                 extra={**extra, "ops": ",".join(f["ops"])})
    if f["bn_nodes"]:
        checks.equal(rec, "deploy_eps_attribute", float(np.float32(dl.EPS)), f["epsilon"],
                     source="the model's eps, as float32 (ONNX's attribute type)", extra=extra)
        declared_m = decl.momentum_attr.value
        checks.equal(rec, "deploy_momentum_attribute", None if declared_m is None else float(np.float32(declared_m)),
                     None if f["momentum"] is None else float(f["momentum"]), source=decl.momentum_attr.source,
                     extra=extra)
        checks.equal(rec, "deploy_training_mode_attribute", 1 if decl.statistics.value == "batch" else 0,
                     int(f["training_mode"] or 0), source=decl.statistics.source, extra=extra)
        first_bn = "bn" if model == "layer" else first_net_bn()
        w = trained.weights
        kept = f["mean"] is not None and bool(np.array_equal(f["mean"], w[f"{first_bn}.mean"]) and
                                              np.array_equal(f["var"], w[f"{first_bn}.var"]))
        checks.equal(rec, "deploy_export_keeps_state", decl.keeps_state.value, kept, source=decl.keeps_state.source,
                     extra=extra, max_abs_err=None if f["mean"] is None else
                     float(np.max(np.abs(f["mean"] - w[f"{first_bn}.mean"]))))
    dynamic = isinstance(f["batch_dim"], str) and bool(f["batch_dim"])
    checks.equal(rec, "deploy_dynamic_batch_dim", decl.dynamic_batch.value, dynamic, source=decl.dynamic_batch.source,
                 extra={**extra, "batch_dim": f["batch_dim"]})
    if rec.writer is not None:
        rec.writer.write("matrix", name="deploy_export", test=rec.base["test"], adapter=case.adapter.id,
                         device=case.device, model=model, exporter=exporter, mode=mode, bn_node=node,
                         epsilon=f["epsilon"], momentum=f["momentum"], training_mode=f["training_mode"],
                         keeps_state=None if not f["bn_nodes"] else kept, batch_dim=str(f["batch_dim"]),
                         seconds=exp.seconds, passed=all(c.get("passed", True) for c in rec.checks))


def test_deploy_traps(case, rec, sessions):
    lane_cls = capabilities.require(case.adapter, "deploy")
    traps = lane_cls(case.adapter).traps()
    if not traps:
        pytest.skip(f"{case.adapter.id}: its deploy lane declares no traps")
    for prop, (declared, observe) in traps.items():
        checks.equal(rec, prop, declared.value, observe(), source=declared.source)


def first_net_bn() -> str:
    from bnsuite.adapters.nets import bn_names

    return bn_names(dl.NET_ARCH)[0]


summaries.register_rows(
    "deploying: exporter x runtime (statistics declared/observed, max abs err vs oracle, folding)", ROWS,
    lambda r: f"{r['adapter']:<16} {r['model']:<5} {r['exporter'] + ' (' + r['mode'] + ')':<34} -> "
              f"{r['runtime']:<14} {r['declared_statistics']}/{r['observed_statistics']:<8} "
              f"err {r['err_oracle']:.2e} (tol {r['tol_oracle']:.1e}, {r['precision']}) {r['folding']}"
              + ("" if r["passed"] else "  FAILED"))


@summaries.register
def _cost(terminalreporter, config) -> None:
    if COST:
        terminalreporter.section("deploying: wall seconds per step kind")
        for adapter, cost in COST.items():
            terminalreporter.write_line(f"{adapter}: " + ", ".join(f"{k} {v:.1f}" for k, v in cost.items()))
