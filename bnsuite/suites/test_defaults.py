"""Declared defaults are the real defaults: eps, momentum (value and direction), channel axis, `training` left out."""

import numpy as np

from bnsuite.adapters import reference as ref
from bnsuite.adapters.base import State
from bnsuite.suites import checks as ch
from bnsuite.suites import data
from bnsuite.suites import tolerances as tl


def _default_layer(case, rec):
    # channels_last=True means "pass no axis": the framework's own default decides the layout.
    spec = case.spec(rank=4, channels_last=True, use_defaults=True)
    bn = case.build(spec)
    rec.snippet = bn.snippet()
    return spec, bn


def test_default_hyperparameters(case, rec):
    spec, bn = _default_layer(case, rec)
    hp = bn.hyperparameters()
    decl = case.decl
    ch.equal(rec, "default_eps", decl.default_eps.value, hp["eps"], source=decl.default_eps.source)
    ch.equal(rec, "default_momentum", decl.default_momentum.value, hp["momentum"],
             source=decl.default_momentum.source)
    ch.equal(rec, "default_channels_last", decl.default_channels_last.value, hp["channels_last"],
             source=decl.default_channels_last.source)


def test_default_eps_behaviour(case, rec):
    """Inference with the defaults where eps moves the output (running variances of the order of the declared
    default eps): the output is the oracle's at the declared default eps, also where the adapter reports no
    hyperparameters."""
    spec, bn = _default_layer(case, rec)
    decl = case.decl
    eps = float(decl.default_eps.value)
    if not eps > 0:
        ch.equal(rec, "default_eps_output", "a positive default eps", f"{eps!r} declared",
                 source=decl.default_eps.source)
    st0 = data.state(spec)
    # The seeded state and batch scaled by sqrt(eps): running variances in [0.5, 2] * eps, inputs of their scale.
    r = lambda a: data.representable(a, spec.dtype)
    st = State(st0.scale, st0.offset, r(st0.mean * np.sqrt(eps)), r(st0.var * eps))
    bn.set_state(st)
    x = r(data.batch(spec) * np.sqrt(eps))
    y = bn.forward(x, training=False)
    axis = spec.channel_axis
    y_ref = ref.forward_inference(x, st.scale, st.offset, st.mean, st.var, eps, axis)
    tol = tl.bn_output(x, axis, y_ref, st.scale, eps, io_dtype=spec.dtype, normalize_var=st.var)
    effect = min(float(np.max(np.abs(ref.forward_inference(x, st.scale, st.offset, st.mean, st.var, e, axis) - y_ref)))
                 for e in (eps / 2, 2 * eps))
    tl.assert_separable(tol.atol, effect, "the declared default eps from half or twice of it")
    ch.close(rec, "default_eps_output", y, y_ref, tol, declared=f"oracle at the declared default eps {eps!r}",
             source=decl.default_eps.source)


def test_default_momentum_behaviour(case, rec):
    """One training step with the defaults: which term does the default momentum weight, and by how much?"""
    spec, bn = _default_layer(case, rec)
    decl = case.decl
    st = data.state(spec)
    bn.set_state(st)
    x = data.batch(spec)
    bn.forward(x, training=True)
    after = bn.get_state()
    axis = spec.channel_axis
    batch_mean = ref.moments(x, axis).mean
    w_new = (after.mean - st.mean) / (batch_mean - st.mean)  # weight the update gave the new batch mean
    m = decl.default_momentum.value
    tol = tl.momentum_weight(spec.dtype)
    observed = ("new" if tol.allows(w_new, m).all() else
                "old" if tol.allows(w_new, 1 - m).all() else f"neither (weight on new = {w_new.tolist()})")
    ch.equal(rec, "momentum_weights", decl.momentum_weights.value, observed, source=decl.momentum_weights.source,
             extra={"weight_on_new_batch": float(np.mean(w_new))})


def _classify_mode(bn, x, spec, st_before):
    y = bn.forward(x, training=None)
    train_ref, _ = ref.forward_train(x, st_before.scale, st_before.offset, spec.eps, spec.channel_axis)
    infer_ref = ref.forward_inference(x, st_before.scale, st_before.offset, st_before.mean, st_before.var, spec.eps,
                                      spec.channel_axis)
    tol = tl.bn_output(x, spec.channel_axis, train_ref, st_before.scale, spec.eps, io_dtype=spec.dtype)
    tol = tl.mode_classification(tol)
    return ch.classify(y, {"training": train_ref, "inference": infer_ref}, tol)


def test_training_left_out(case, rec):
    """What `training` left out of the call means: inference, training, an error, or the module's own mode."""
    decl = case.decl
    spec, bn, st, x = case.layer(rec, rank=2)
    try:
        first = _classify_mode(bn, x, spec, st)
    except Exception as e:  # the framework refuses a call without a mode
        observed = f"error:{type(e).__name__}"
    else:
        bn.forward(x, training=False)  # put stateful modules (torch) into inference mode
        bn.set_state(st)
        second = _classify_mode(bn, x, spec, st)
        observed = first if first == second else "module-mode"
    ch.equal(rec, "training_default", decl.training_default.value, observed, source=decl.training_default.source)
