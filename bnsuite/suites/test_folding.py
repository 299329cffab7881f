"""The folding lane: conv-BN folding, module fusion, quantization-aware training and BatchNorm conversion, each path
run on small models trained a few steps in train mode (so the running statistics are not defaults), with a custom
eps and momentum (so a reset to the defaults is visible), and checked against the float64 oracle AND the same model
run eagerly.

Per path (one test each, every model the lane declares it for): what the path does to a model in train mode; each
BatchNorm attribute it declares kept (or reset, to what); whether the BatchNorm was folded away; the inference
output against the oracle computed with what the path declares it keeps (eps, statistics, the subclass's forward)
and against the eager model (equal where the path keeps everything, visibly different where it declares a reset);
for a path with a training mode: which statistics its training-mode output normalizes with, whether that forward
moves the running statistics, and by the momentum declared.
"""

from __future__ import annotations

import numpy as np
import pytest

from bnsuite.adapters import capabilities, nets
from bnsuite.adapters.base import Cited
from bnsuite.lanes import folding as fl
from bnsuite.suites import checks as ch
from bnsuite.suites import data, summaries
from bnsuite.suites import tolerances_folding as tf

EPS = 1e-3  # neither torch's 1e-5 nor a value a reset could restore
MOMENTUM = 0.03
LR = 0.1
STEPS = 3
BATCH = 8
# The property of each BatchNorm attribute a path keeps or resets (fl.ATTRIBUTES).
BN_PROPERTIES = {"eps": "folding_bn_eps", "momentum": "folding_bn_momentum", "training": "folding_bn_training",
                 "affine": "folding_bn_affine", "track_running_stats": "folding_bn_track_running_stats"}
ROWS: list[dict] = []
summaries.register_rows("folding and quantization", ROWS, lambda r: (
    f"{r['adapter']:8s} {r['path']:24s} {r['model']:20s} eps {r['eps']!s:10s} momentum {r['momentum']!s:10s} "
    f"training {r['training']!s:6s} vs eager {r['vs_eager']:.3g} vs oracle {r['vs_oracle']:.3g}"))


def _lane(case) -> fl.FoldingLane:
    cls = capabilities.require(case.adapter, "folding",
                               check=lambda o: isinstance(o, type) and issubclass(o, fl.FoldingLane))
    return cls()


def _data(model: str):
    """Seeded training batches (input, target) and an evaluation input, float32-representable."""
    rng = np.random.default_rng(data.seed_for(41))
    shift = rng.uniform(-1, 1, (1, fl.IN_SHAPE[model][0]) + (1,) * (len(fl.IN_SHAPE[model]) - 1))
    make = lambda n, shape: data.representable(rng.standard_normal((n, *shape)), "float32")
    batches = [(data.representable(make(BATCH, fl.IN_SHAPE[model]) * 1.5 + shift, "float32").astype(np.float32),
                make(BATCH, fl.OUT_SHAPE[model]).astype(np.float32)) for _ in range(STEPS)]
    x = data.representable(make(4, fl.IN_SHAPE[model]) * 1.5 + shift, "float32").astype(np.float32)
    return batches, x


def _weights(model: str) -> dict[str, np.ndarray]:
    if model == "conv_bn_relu_dense":  # the suite's network, with its canonical seeded weights
        return nets.init_weights(model, seed=data.seed_for(0), dtype="float32")
    return fl.init_weights(model, data.seed_for(7))


def _with_stats(weights: dict, stats) -> dict:
    return weights if stats is None else {**weights, "bn.mean": stats[0], "bn.var": stats[1]}


@pytest.mark.parametrize("path", list(fl.PATH_NAMES))
def test_folding(case, rec, path):
    lane = _lane(case)
    if path not in lane.paths:
        pytest.skip(f"{case.adapter.id}: its folding lane declares no path {path!r} ({fl.PATH_NAMES[path]})")
    if case.dtype != "float32":
        pytest.skip(f"{case.adapter.id}: the folding lane runs float32 models only")
    models, decl = lane.paths[path]
    rec.snippet = (f"from bnsuite.adapters import capabilities, registry\nlane = capabilities.load(registry.load("
                   f"{case.adapter.id!r}), 'folding')()\nout = lane.run({path!r}, model, eps={EPS}, "
                   f"momentum={MOMENTUM}, ...)")
    with rec.together():
        for model in models:
            batches, x = _data(model)
            try:
                out = lane.run(path, model, batches=batches, x=x, eps=EPS, momentum=MOMENTUM, lr=LR,
                               weights=_weights(model))
            except Exception as e:  # a declared path that cannot run fails, named
                msg = f"folding_path_runs: {path} on {model} raised {type(e).__name__}: {e} {rec.where()}"
                rec.record("folding_path_runs", declared="runs", observed=f"{type(e).__name__}: {e}",
                           passed=False, message=msg, path=path, model=model)
                rec.fail(msg)
                continue
            _check(rec, path, model, decl, out, x, lane.default_momentum)


def test_folding_qat_same_padding(case, rec):
    lane = _lane(case)
    if lane.qat_same_padding is None:
        pytest.skip(f"{case.adapter.id}: its folding lane declares no quantization-aware training")
    _, x = _data("conv_bn")
    rec.snippet = "lane.run_qat_same_padding(x)  # a QAT-prepared conv(padding='same')-BN, one training forward"
    ch.equal(rec, "folding_qat_same_padding", lane.qat_same_padding.value, lane.run_qat_same_padding(x),
             source=lane.qat_same_padding.source)


def _check(rec, path: str, model: str, decl: Cited, out: fl.Outcome, x: np.ndarray,
           default_momentum: Cited | None) -> None:
    __tracebackhide__ = True
    s: fl.Survives = decl.value
    src = decl.source
    where = {"path": path, "model": model}
    ch.equal(rec, "folding_train_model", s.train_model, out.train_model, source=src, extra=where)
    ch.equal(rec, "folding_bn_folded", s.folded, out.attrs_after is None, source=src, extra=where)
    after = out.attrs_after or {}
    for attr in fl.ATTRIBUTES:
        if attr in s.kept or attr in s.reset:
            declared = s.reset[attr] if attr in s.reset else out.attrs_before[attr]
            ch.equal(rec, BN_PROPERTIES[attr], declared, after.get(attr, "folded away"), source=src,
                     extra={**where, "before": out.attrs_before[attr]})
    eps = s.reset.get("eps", EPS)
    momentum = s.reset.get("momentum", MOMENTUM)
    affine = model not in fl.NO_AFFINE_MODELS
    eval_stats = "batch" if model in fl.BATCH_STATS_MODELS else s.eval_stats
    w_eval = _with_stats(out.weights, out.stats_after)
    float_tol = tf.folded("float32", fl.REDUCTIONS[model], fl.magnitude(model, w_eval, x, eps))
    tol = _quantized(float_tol, model, w_eval, x, eps, out) if s.quantized else float_tol
    y_ref = fl.oracle_forward(model, w_eval, x, eps=eps, stats=eval_stats, affine=affine,
                              folded=s.folded and eval_stats == "running", ranges=out.quant_steps.get("ranges"))
    if model == "conv_bn_subclass" and s.subclass_forward == "kept":
        y_ref = np.maximum(y_ref, 0.0)  # the subclass adds relu after its BatchNorm
    if s.quantized:  # the output's fake quantizer saturates at the ends of its range
        y_ref = np.clip(y_ref, *out.quant_steps["eval_output_range"])
    ch.close(rec, "folding_output_vs_oracle", out.y, y_ref, tol, declared=f"oracle (eps {eps}, {eval_stats} "
             f"statistics{', subclass forward ' + s.subclass_forward if s.subclass_forward else ''})", source=src,
             extra=where)
    # a quantized path's output saturates at its quantizer's range: the eager output is compared inside it
    y_eager = np.clip(out.y_eager, *out.quant_steps["eval_output_range"]) if s.quantized else out.y_eager
    vs_eager = float(np.max(np.abs(out.y - y_eager)))
    dropped = model == "conv_bn_subclass" and s.subclass_forward == "dropped"
    same = "eps" not in s.reset and "momentum" not in s.reset and not dropped
    eager_tol = tf.folded_vs_eager(tol)
    if same:
        ch.close(rec, "folding_output_vs_eager", out.y, y_eager, eager_tol, declared="the eager model",
                 source=src, extra=where)
    else:
        differs = "differs" if not bool(eager_tol.allows(out.y, y_eager).all()) else "equal"
        ch.equal(rec, "folding_output_vs_eager", "differs", differs, source=src, max_abs_err=vs_eager,
                 extra={**where, "detail": "the path declares a reset or a dropped forward, so it must show"})
    if out.converted:
        _check_converted(rec, src, where, model, w_eval, eps, out)
    if s.train_stats is not None:
        _check_training(rec, s, src, where, model, out, x, eps, momentum, tol, default_momentum)
    ROWS.append({"adapter": rec.base["adapter"], **where, "eps": after.get("eps", "folded"),
                 "momentum": after.get("momentum", "folded"), "training": after.get("training", "-"),
                 "vs_eager": vs_eager, "vs_oracle": float(np.max(np.abs(out.y - y_ref)))})


def _check_converted(rec, src, where, model, weights, eps, out: fl.Outcome) -> None:
    """An int8 path's converted conv holds the oracle's fold (the trained statistics and eps) within half its weight
    step, its float bias within the fold's roundings; the dense layer its trained weights within half its step. A
    weight beyond its quantizer's range saturates there (the range follows a moving average of the weights' ranges
    during training, so it can trail the trained weights): the oracle clips it too."""
    __tracebackhide__ = True
    w, c, q = weights, out.converted, out.quant_steps
    kernel, bias = fl.fold(w["conv.kernel"], w["conv.bias"], w["bn.scale"], w["bn.offset"], w["bn.mean"], w["bn.var"],
                           eps)
    k = fl.bn_scale(w, eps)
    for layer, expected, step, what in (
            ("conv", kernel, q["weight"], f"the conv folded with its BatchNorm (eps {eps}, trained statistics)"),
            ("dense", w["dense.kernel"], q["dense_weight"], "the trained dense weights")):
        clipped, _ = tf.weight_clip(expected, step, q["weight_qrange"])
        ch.close(rec, "folding_int8_folded_weights", c[f"{layer}.kernel"], clipped, tf.int8_weights(step, expected),
                 declared=what + ", clipped at the quantizer's range", source=src, extra={**where, "layer": layer})
    terms = np.abs(w["conv.bias"] - w["bn.mean"]) * k + np.abs(w["bn.offset"])
    ch.close(rec, "folding_int8_folded_bias", c["conv.bias"], bias, tf.folded_bias(terms),
             declared=f"the conv bias folded with its BatchNorm (eps {eps})", source=src, extra={**where})


def _quantized(float_tol, model, weights, x, eps, out: fl.Outcome, gain=1.0):
    q = out.quant_steps
    if "dense_weight" in q:  # an int8 network: its conv layer, then its dense layer (weights clipped at their range)
        dense_w, dense_in = fl.dense_abs(model, weights, x, eps, q.get("ranges"))
        w = weights
        kernel, _ = fl.fold(w["conv.kernel"], w["conv.bias"], w["bn.scale"], w["bn.offset"], w["bn.mean"],
                            w["bn.var"], eps)
        _, conv_err = tf.weight_clip(kernel, q["weight"], q["weight_qrange"])
        _, dense_err = tf.weight_clip(w["dense.kernel"], q["dense_weight"], q["weight_qrange"])
        return tf.quantized_layers(float_tol, [
            {"step_in": q["input"], "weight_abs": fl.folded_weight_abs(model, weights, eps), "step_weight": q["weight"],
             "input_abs": fl.receptive_abs(model, weights, x), "n": fl.REDUCTIONS[model][0], "step_out": q["output"],
             "weight_err": conv_err},
            {"step_in": q["dense_input"], "weight_abs": dense_w, "step_weight": q["dense_weight"],
             "input_abs": dense_in, "n": fl.REDUCTIONS[model][-1], "step_out": q["dense_output"],
             "weight_err": dense_err}])
    return tf.quantized(float_tol, step_in=float(q.get("input", 0.0)), step_weight=np.asarray(q["weight"]),
                        step_out=float(q["output"]), weight_abs=fl.folded_weight_abs(model, weights, eps),
                        input_abs=fl.receptive_abs(model, weights, x), gain=gain)


def _check_training(rec, s: fl.Survives, src, where, model, out: fl.Outcome, x, eps, momentum, tol,
                    default_momentum: Cited | None) -> None:
    __tracebackhide__ = True
    w0 = _with_stats(out.weights, out.stats_before)
    z = fl.bn_input(model, w0, x)
    batch_var = z.var(axis=(0, 2, 3))
    gain = np.sqrt((w0["bn.var"] + eps) / (batch_var + eps)).reshape(-1)
    float_tol = tf.folded("float32", fl.REDUCTIONS[model] + [z.size // z.shape[1]], fl.magnitude(model, w0, x, eps))
    train_tol = _quantized(float_tol, model, w0, x, eps, out, gain=np.maximum(gain, 1.0)) if s.quantized else float_tol
    lo, hi = out.quant_steps.get("output_range", (-np.inf, np.inf))
    candidates = {st: np.clip(fl.oracle_forward(model, w0, x, eps=eps, stats=st), lo, hi)
                  for st in ("batch", "running")}
    observed = ch.classify(out.y_train, candidates, train_tol)
    errs = {k: float(np.max(np.abs(out.y_train - v))) for k, v in candidates.items()}
    ch.equal(rec, "folding_train_output_stats", s.train_stats, observed, source=src,
             extra={**where, "max abs err vs batch": errs["batch"], "vs running": errs["running"],
                    "atol": train_tol.atol})
    moved = bool(np.max(np.abs(out.stats_after[0] - out.stats_before[0])) > 0
                 or np.max(np.abs(out.stats_after[1] - out.stats_before[1])) > 0)
    ch.equal(rec, "folding_stats_move", s.stats_move, moved, source=src, extra=where)
    if s.stats_move and not out.quant_steps.get("input"):
        # the BatchNorm sees the float conv output, so the update must be the declared momentum's
        mean, var = fl.running_after(model, w0, x, momentum)
        spread = float(np.max(np.abs(z - z.mean(axis=(0, 2, 3), keepdims=True))))
        st_tol = tf.running_update(momentum, float_tol.atol, spread, "float32", z.size // z.shape[1],
                                   float(np.max(np.abs(z)) ** 2))
        ch.close(rec, "folding_running_stats_update", np.concatenate(out.stats_after),
                 np.concatenate([mean, var]), st_tol, declared=f"momentum {momentum}", source=src, extra=where)
    if s.stats_move and default_momentum is not None:
        _check_momentum(rec, src, where, model, out, x, eps, momentum, default_momentum)


def _check_momentum(rec, src, where, model, out: fl.Outcome, x, eps, momentum, default_momentum: Cited) -> None:
    """Which momentum moved the running statistics in the training-mode forward: the model's own or the framework's
    default. The BatchNorm sees the conv output computed from the fake-quantized input and the fake-quantized
    folded weight divided back by the fold's scale, so its input is known within that quantization error."""
    __tracebackhide__ = True
    w0 = _with_stats(out.weights, out.stats_before)
    z = fl.bn_input(model, w0, x)
    n = z.size // z.shape[1]
    q = out.quant_steps
    k = fl.bn_scale(w0, eps)
    float_tol = tf.folded("float32", fl.REDUCTIONS[model][:1], fl.magnitude(model, w0, x, eps))
    z_err = float_tol.atol + tf.layer_error(
        0.0, step_in=float(q.get("input", 0.0)), weight_abs=fl.folded_weight_abs(model, w0, eps) / k,
        step_weight=np.asarray(q["weight"]) / k, input_abs=fl.receptive_abs(model, w0, x),
        n=fl.REDUCTIONS[model][0], step_out=0.0)
    momenta = {f"{m:g}": m for m in (MOMENTUM, default_momentum.value)}
    candidates = {name: np.concatenate(fl.running_after(model, w0, x, m)) for name, m in momenta.items()}
    st_tol = tf.running_update_per_channel(max(momenta.values()), z_err, z.std(axis=(0, 2, 3)), "float32", n,
                                           float(np.max(np.abs(z)) ** 2))
    observed = np.concatenate(out.stats_after)
    errs = {name: float(np.max(np.abs(observed - c))) for name, c in candidates.items()}
    ch.equal(rec, "folding_running_stats_momentum", f"{momentum:g}", ch.classify(observed, candidates, st_tol),
             source=f"{src}; default: {default_momentum.source}",
             extra={**where, **{f"max abs err vs momentum {name}": e for name, e in errs.items()},
                    "atol": float(np.max(st_tol.atol)), "tol_why": st_tol.why})
