"""The batch-independent alternatives to BatchNorm: LayerNorm, RMSNorm, GroupNorm, InstanceNorm.

For every framework that has the layer (through its norm adapter, ``bnsuite.adapters.norms``): the output equals the
NumPy float64 oracle, and a sample's output does not depend on the batch size or on the other samples of its batch,
in training AND inference (the property BatchNorm lacks), bitwise where the framework's declaration says so, else
within the bound of suites/tolerances/. The declared differences between frameworks (default eps, default axes,
default affine, how the variance is computed, GroupNorm's channel grouping, InstanceNorm's running statistics) are
checked against the real layers.
"""

from __future__ import annotations

import numpy as np
import pytest

from bnsuite.adapters.base import Spec, Unsupported
from bnsuite.adapters import capabilities
from bnsuite.adapters.norms import NormSpec
from bnsuite.adapters.norms import reference as nref
from bnsuite.suites import checks as ch
from bnsuite.suites import data
from bnsuite.suites import tolerances as tl

EPS = 1e-3
BATCH = 8
# (kind, rank, channels_last): LayerNorm and RMSNorm normalize the last (feature) axis; GroupNorm and InstanceNorm
# are checked in both channel layouts (each framework declares which it accepts).
KIND_LAYOUTS = [("layer", 2, True), ("layer", 4, True), ("rms", 2, True), ("rms", 4, True),
                ("group", 4, False), ("group", 4, True), ("instance", 4, False), ("instance", 4, True)]
KINDS = ("layer", "rms", "group", "instance")
DTYPE_EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


def _kind_layout_id(kl) -> str:
    kind, rank, cl = kl
    return f"{kind}-{NormSpec(kind, rank=rank, channels_last=cl).layout}"


def norm_layer(case, rec, spec: NormSpec):
    """(the declaration, the facts of spec.kind, the built layer); skips with the reason where any is missing."""
    cls = capabilities.require(case.adapter, "norms")
    decl = cls.declare()
    try:
        layer = cls(spec)
    except Unsupported as e:
        case.skip_refused(e)
    rec.snippet = layer.snippet()
    return decl, decl.facts(spec.kind), layer


def _bn_spec(spec: NormSpec) -> Spec:
    return Spec(num_features=spec.num_features, rank=spec.rank, channels_last=spec.channels_last, dtype=spec.dtype)


def _oracle(spec: NormSpec, x, scale, offset, *, eps=None, axes="last", layout="contiguous", channel_axis=None):
    ca = spec.channel_axis if channel_axis is None else channel_axis
    eps = spec.eps if eps is None else eps
    y = nref.forward(spec.kind, x, eps, scale, offset, channel_axis=ca, groups=spec.groups, axes=axes, layout=layout)
    rows = nref.rows(x, spec.kind, channel_axis=ca, groups=spec.groups, axes=axes, layout=layout)
    return y, rows


def _eps_value(eps, dtype: str) -> float:
    return DTYPE_EPS[dtype] if eps == "dtype-eps" else float(eps)


@pytest.mark.parametrize("kind_layout", KIND_LAYOUTS, ids=_kind_layout_id)
def test_norm_layer(case, rec, kind_layout):
    """Output vs oracle, batch-size and batch-composition independence, in training and inference."""
    kind, rank, cl = kind_layout
    spec = NormSpec(kind, rank=rank, channels_last=cl, eps=EPS, dtype=case.dtype, device=case.device)
    decl, facts, layer = norm_layer(case, rec, spec)
    f = facts.value
    bspec = _bn_spec(spec)
    x = data.batch(bspec, seed=0, batch_size=BATCH)
    st = data.state(bspec)
    offset = None if kind == "rms" else st.offset
    layer.set_params(st.scale, offset)
    y_ref, rows = _oracle(spec, x, st.scale, offset, layout=decl.group_layout.value)
    tol = tl.norm_output(rows, y_ref, st.scale, EPS, io_dtype=case.dtype, variance=f.variance)
    tol_b = tl.norm_batch_independence(tol, f.bitwise_batch_independent)
    # Other samples, far from these (another mean and scale), so a batch statistic would move the output a lot.
    others = data.batch(bspec, seed=5, batch_size=BATCH, mean_scale=10.0) * 3.0
    mixed = np.concatenate([x[:1], others[1:]])
    perm = np.random.default_rng(3).permutation(BATCH)
    src = f"{facts.source}; samples are normalized with their own statistics"
    for training in (True, False):
        mode = "training" if training else "inference"
        extra = {"mode": mode, "norm_kind": kind, "layer": f.layer}
        y = layer.forward(x, training)
        ch.close(rec, "norm_output_vs_oracle", y, y_ref, tol, source=facts.source, extra=extra)
        if kind == "group":
            cands = {lay: _oracle(spec, x, st.scale, offset, layout=lay)[0] for lay in nref.GROUP_LAYOUTS}
            tl.norm_classification_margin(tol, cands)
            ch.equal(rec, "group_norm_channel_layout", decl.group_layout.value, ch.classify(y, cands, tol),
                     source=decl.group_layout.source, extra=extra)
        # The same samples in batches of 1 and 3: the full-batch output, bitwise where declared.
        y1 = np.concatenate([layer.forward(x[i:i + 1], training) for i in range(2)])
        y3 = layer.forward(x[:3], training)
        declared = "bitwise the full-batch output" if f.bitwise_batch_independent else "the full-batch output"
        ch.close(rec, "norm_batch_size_independent", y1, y[:2], tol_b, declared=declared, source=src,
                 extra={**extra, "batch_size": 1})
        ch.close(rec, "norm_batch_size_independent", y3, y[:3], tol_b, declared=declared, source=src,
                 extra={**extra, "batch_size": 3})
        if training and rec.writer is not None:
            b = rec.base
            rec.writer.write("curve", name=f"norm_sample_change_vs_batch_size ({_kind_layout_id(kind_layout)})",
                             adapter=b["adapter"], device=b["device"], dtype=b["dtype"], test=b["test"],
                             x=[1, 3, BATCH], y=[float(np.max(np.abs(y1 - y[:2]))),
                                                 float(np.max(np.abs(y3 - y[:3]))), 0.0],
                             xlabel="batch size", ylabel=f"max |y(sample) - y(sample in batch {BATCH})|",
                             layer=f.layer)
        # Sample 0 among other samples, and the batch permuted.
        y_mixed = layer.forward(mixed, training)
        y_perm = layer.forward(x[perm], training)
        ch.close(rec, "norm_batch_composition_independent", y_mixed[:1], y[:1], tol_b, declared=declared,
                 source=src, extra={**extra, "change": "other samples"})
        ch.close(rec, "norm_batch_composition_independent", y_perm, y[perm], tol_b, declared=declared,
                 source=src, extra={**extra, "change": "permuted batch"})


def _default_input(spec: NormSpec, c: int, dtype: str, scale: float, shift: float = 0.0) -> np.ndarray:
    """(N, c, c, c) for the 4-D cases, so both channel layouts are valid shapes and the layer's own default picks
    one; each channel has its own mean and spread."""
    rng = np.random.default_rng(11)
    shape = (BATCH, c, c, c)
    means = rng.uniform(-1, 1, c)
    stds = rng.uniform(0.5, 2.0, c)
    ax = 3 if spec.kind in ("layer", "rms") else (1 if spec.channels_last is False else 3)
    b = [1, 1, 1, 1]
    b[ax] = c
    x = (rng.standard_normal(shape) * stds.reshape(b) + means.reshape(b)) * scale + shift
    return data.representable(x, dtype)


@pytest.mark.parametrize("kind", KINDS)
def test_norm_defaults(case, rec, kind):
    """Built with the framework's defaults: the declared eps, axes and affine, and the declared variance algorithm."""
    cls = capabilities.require(case.adapter, "norms")
    facts0 = cls.declare().facts(kind)
    cl = True if facts0 is None else facts0.value.default_axes != "channels-first"
    spec = NormSpec(kind, rank=4, channels_last=cl, dtype=case.dtype, device=case.device, use_defaults=True)
    decl, facts, layer = norm_layer(case, rec, spec)
    f = facts.value
    c = spec.num_features
    scale, offset = layer.get_params()
    ch.equal(rec, "norm_default_affine", f.default_affine, scale is not None, source=facts.source,
             extra={"norm_kind": kind, "layer": f.layer})
    if scale is not None:
        st = data.state(_bn_spec(spec.replace(rank=2)))
        scale, offset = st.scale, (None if offset is None else st.offset)
        layer.set_params(scale, offset)
    eps = _eps_value(f.default_eps, case.dtype)
    axes_by = {"last": dict(axes="last", channel_axis=3), "non-batch": dict(axes="non-batch", channel_axis=3),
               "channels-first": dict(channel_axis=1), "channels-last": dict(channel_axis=3)}
    axis_cands = ("last", "non-batch") if kind in ("layer", "rms") else ("channels-first", "channels-last")
    # Values of variance ~1e-4, where eps 1e-3, 1e-5, 1e-6 and float32's 1.2e-7 each move the output visibly.
    x = _default_input(spec, c, case.dtype, scale=1e-2)
    y = layer.forward(x, False)
    extra = {"norm_kind": kind, "layer": f.layer}

    def oracle(eps_, axes_):
        return _oracle(spec, x, scale, offset, eps=eps_, layout=decl.group_layout.value, **axes_by[axes_])

    y_ref, rows = oracle(eps, f.default_axes)
    tol = tl.norm_output(rows, y_ref, scale, eps, io_dtype=case.dtype, variance=f.variance)
    # The usual defaults and the declared one (a framework may declare another, e.g. 1e-7).
    eps_cands = {repr(e): oracle(_eps_value(e, case.dtype), f.default_axes)[0]
                 for e in dict.fromkeys((1e-3, 1e-5, 1e-6, "dtype-eps", f.default_eps))}
    tl.norm_classification_margin(tol, eps_cands)
    ch.equal(rec, "norm_default_eps", repr(f.default_eps), ch.classify(y, eps_cands, tol), source=facts.source,
             extra=extra)
    axes_cands = {a: oracle(eps, a)[0] for a in axis_cands}
    tl.norm_classification_margin(tol, axes_cands)
    ch.equal(rec, "norm_default_axes", f.default_axes, ch.classify(y, axes_cands, tol), source=facts.source,
             extra=extra)
    if kind == "rms":
        return  # no centering: no cancellation to reveal the variance algorithm
    # A large common shift (mean^2/var ~ 1e6): a two-pass variance keeps the output within its bound, the one-pass
    # E[x^2] - E[x]^2 loses every digit in float32.
    xs = _default_input(spec, c, case.dtype, scale=1.0, shift=1000.0)
    ys = layer.forward(xs, False)
    ys_ref, rows_s = _oracle(spec, xs, scale, offset, eps=eps, layout=decl.group_layout.value,
                             **axes_by[f.default_axes])
    two_pass = tl.norm_output(rows_s, ys_ref, scale, eps, io_dtype=case.dtype, variance="two-pass")
    observed = "two-pass" if bool(two_pass.allows(ys, ys_ref).all()) else "one-pass"
    ch.equal(rec, "norm_variance_algorithm", f.variance, observed, source=facts.source,
             extra={**extra, "max_abs_err_at_shift_1000": float(np.max(np.abs(ys - ys_ref)))})


def test_instance_norm_running_statistics(case, rec):
    """InstanceNorm's running statistics: off by default where declared so, and what inference normalizes with."""
    cls = capabilities.require(case.adapter, "norms")
    decl = cls.declare()
    facts = decl.facts("instance")
    if facts is None:
        pytest.skip(f"{case.adapter.id}: {decl.missing.get('instance', 'no InstanceNorm')}")
    cl = facts.value.default_axes != "channels-first"
    _, _, layer = norm_layer(case, rec, NormSpec("instance", rank=4, channels_last=cl, dtype=case.dtype,
                                                  device=case.device, use_defaults=True))
    ch.equal(rec, "instance_norm_default_track_running_stats", decl.instance_running_stats_default.value,
             layer.tracks_running_stats(), source=decl.instance_running_stats_default.source)
    if decl.instance_running_stats.value is None:
        pytest.skip(f"{case.adapter.id}: InstanceNorm keeps no running statistics "
                    f"({decl.instance_running_stats.source})")
    spec = NormSpec("instance", rank=4, channels_last=cl, eps=EPS, track_running_stats=True, dtype=case.dtype,
                    device=case.device)
    _, _, layer = norm_layer(case, rec, spec)
    bspec = _bn_spec(spec).replace(track_running_stats=True)
    st = data.state(bspec)
    x = data.batch(bspec, seed=0, batch_size=BATCH)
    layer.set_params(st.scale, st.offset)
    layer.set_running_stats(st.mean, st.var)
    y = layer.forward(x, False)
    own, rows = _oracle(spec, x, st.scale, st.offset)
    running = nref.instance_norm_running(x, st.mean, st.var, EPS, st.scale, st.offset, spec.channel_axis)
    tol = tl.norm_output(rows, own, st.scale, EPS, io_dtype=case.dtype, variance=facts.value.variance)
    cands = {"running": running, "instance": own}
    tl.norm_classification_margin(tol, cands)
    ch.equal(rec, "instance_norm_inference_statistics", decl.instance_running_stats.value,
             ch.classify(y, cands, tol), source=decl.instance_running_stats.source)


def test_layer_norm_rms_scaling(case, rec):
    """LayerNorm's rms_scaling option where a framework has one (Keras): what it divides by, declared and observed."""
    spec = NormSpec("layer", rank=2, eps=EPS, rms_scaling=True, dtype=case.dtype, device=case.device)
    decl, facts, layer = norm_layer(case, rec, spec)
    bspec = _bn_spec(spec)
    x = data.batch(bspec, seed=0, batch_size=BATCH)
    st = data.state(bspec)
    layer.set_params(st.scale, None)
    y = layer.forward(x, False)
    cands = {"variance": nref.scaled_by_variance(x, EPS, st.scale), "mean-square": nref.rms_norm(x, EPS, st.scale)}
    tol = tl.norm_output(nref.rows(x, "layer"), cands["variance"], st.scale, EPS, io_dtype=case.dtype)
    tl.norm_classification_margin(tol, cands)
    ch.equal(rec, "layer_norm_rms_scaling_divides_by", decl.layer_rms_scaling.value, ch.classify(y, cands, tol),
             source=decl.layer_rms_scaling.source)
