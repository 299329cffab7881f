"""The diff: two models of one architecture (two frameworks, or one before and after a conversion), BatchNorm by
BatchNorm, in canonical terms, and their inference outputs on one input; what to change, layer by layer.

Matching: the BatchNorm layers of each model in call order (bnsuite/audit/read.py), pairwise; their counts and channel
counts must agree. Compared after converting conventions (bnsuite/adapters/porting.py): eps as is; momentum as the
weight of the new statistic (Keras / Flax ``m`` is canonical ``1 - m``); running mean and variance, scale and offset
within one rounding to float32 (suites/tolerances_models.copied_vector). The running-variance estimator is reported
where it differs: it cannot be converted, so after a port the running variances drift by the Bessel factor of each
training step. Outputs: both models in inference mode on the same input (transposed to the target's channel axis),
within the derived two-framework tolerance of suites/tolerances_models.py.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from bnsuite.audit.read import BNInfo, ReadError, detect, read
from bnsuite.audit.run import fan_ins, infer
from bnsuite.suites import tolerances_models as tm

VECTORS = (("mean", "running mean"), ("var", "running variance"), ("scale", "scale"), ("offset", "offset"))


class DiffError(ReadError):
    """Bad input to the diff; str() is one line."""


@dataclasses.dataclass
class LayerDiff:
    index: int
    source: str
    target: str
    changes: list[str]  # what to change in the target, one sentence each (empty: the layer matches)
    notes: list[str]  # differences that cannot be changed (the estimator)


@dataclasses.dataclass
class DiffReport:
    source_framework: str
    target_framework: str
    layers: list[LayerDiff]
    output_max_abs: float | None
    output_tol: float | None
    output_note: str

    @property
    def matches(self) -> bool:
        return not any(l.changes for l in self.layers) and (self.output_max_abs is None or
                                                           self.output_max_abs <= self.output_tol)

    def to_json(self) -> str:
        return json.dumps({**{k: v for k, v in dataclasses.asdict(self).items() if k != "layers"},
                           "matches": self.matches, "layers": [dataclasses.asdict(l) for l in self.layers]}, indent=1)

    def __str__(self) -> str:
        n_bad = sum(1 for l in self.layers if l.changes)
        lines = [f"bnsuite diff: {self.source_framework} -> {self.target_framework}, {len(self.layers)} BatchNorm "
                 f"layers matched in order; {n_bad} to change", f"outputs: {self.output_note}"]
        groups: dict = {}  # layers with the same changes and notes print once
        for l in self.layers:
            if l.changes or l.notes:
                groups.setdefault((tuple(l.changes), tuple(l.notes)), []).append(l)
        for (changes, notes), ls in groups.items():
            names = ", ".join(f"{l.index} {l.source} -> {l.target}" for l in ls[:3])
            more = f" and {len(ls) - 3} more" if len(ls) > 3 else ""
            lines.append(f"{len(ls)} layer(s): {names}{more}:")
            lines += [f"      change: {c}" for c in changes] + [f"      note: {n}" for n in notes]
        lines.append("MATCH" if self.matches else "DIFFERENT: apply the changes above to the target")
        return "\n".join(lines)


def _layer(i: int, s: BNInfo, t: BNInfo, tol_rel: float) -> LayerDiff:
    changes, notes = [], []
    if not np.isclose(s.eps, t.eps, rtol=1e-6, atol=0.0):
        changes.append(f"eps {t.eps:g} -> {s.eps:g} (eps is copied unchanged: it is added to the variance in every "
                       "framework)")
    if (s.momentum is None) != (t.momentum is None) or (s.momentum is not None and
                                                        not np.isclose(s.momentum, t.momentum, atol=1e-9)):
        if s.momentum is None:
            changes.append("momentum: the source keeps a cumulative average (torch momentum=None), which the target "
                           "cannot express")
        else:
            native = s.momentum if t.momentum_weights == "new" else round(1 - s.momentum, 12)
            conv = "" if t.momentum_weights == s.momentum_weights else \
                f" (the source's {s.momentum_native:g} weights the {s.momentum_weights} term, the target's momentum " \
                f"the {t.momentum_weights} one: 1 - {s.momentum_native:g})"
            changes.append(f"momentum {t.momentum_native:g} -> {native:g}{conv}")
    for key, label in VECTORS:
        a, b = getattr(s, key), getattr(t, key)
        if a is None and b is None:
            continue
        if a is None or b is None:
            changes.append(f"{label}: present in {'target' if a is None else 'source'} only")
            continue
        d = float(np.max(np.abs(a - b)))
        scale = max(float(np.max(np.abs(a))), np.finfo(np.float32).tiny)
        if d > tol_rel * scale:
            changes.append(f"{label}: copy the source's values (max difference {d:.3g}, {d / scale:.3g} of its "
                           "largest value)")
    if s.estimator != t.estimator:
        notes.append(f"running-variance estimator {s.estimator} -> {t.estimator}: cannot be converted; after each "
                     "training step the running variances differ by the Bessel factor n/(n-1)")
    if s.mode != t.mode and "follows the call" not in (s.mode, t.mode):
        notes.append(f"mode now: {s.mode} -> {t.mode}")
    return LayerDiff(i, s.name, t.name, changes, notes)


def diff(source, target, x=None, source_framework: str | None = None,
         target_framework: str | None = None) -> DiffReport:
    """Compare every BatchNorm of `source` and `target` in order, and their outputs on `x` (in the source's layout).
    DiffError (one line) on bad input."""
    try:
        sf = source_framework or detect(source)
        tf_ = target_framework or detect(target)
        x = None if x is None else np.asarray(x, np.float32)
        s_layers = read(source, x, sf)
        if not s_layers:
            raise DiffError(f"no BatchNorm layer in the source ({sf}): nothing to compare")
        # The target's input layout before its layers are read: torch channels-first, the others channels-last
        # (a Keras model's own axis is read below, before its outputs are compared).
        t_layers = read(target, _to_axis(x, s_layers[0].channel_axis, 1 if tf_ == "torch" else -1), tf_)
    except ReadError as e:
        raise DiffError(str(e)) from None
    if not t_layers:
        raise DiffError(f"no BatchNorm layer in the target ({tf_}): nothing to compare")
    xt = _to_axis(x, s_layers[0].channel_axis, t_layers[0].channel_axis)
    if len(s_layers) != len(t_layers):
        raise DiffError(f"the source has {len(s_layers)} BatchNorm layers and the target {len(t_layers)}: they cannot "
                        "be matched in order")
    for i, (s, t) in enumerate(zip(s_layers, t_layers)):
        if s.channels != t.channels:
            raise DiffError(f"BatchNorm layer {i} does not match: source {s.name!r} has {s.channels} channels, target "
                            f"{t.name!r} {t.channels}")
    layers = [_layer(i, s, t, tm.copied_vector()) for i, (s, t) in enumerate(zip(s_layers, t_layers))]
    out_abs = out_tol = None
    note = "not compared (no input given)"
    if x is not None:
        try:
            ys, yt = infer(source, sf, x), infer(target, tf_, xt)
        except Exception as e:
            raise DiffError(f"running the models raised {type(e).__name__}: "
                            f"{(str(e).strip().splitlines() or [''])[0][:300]}") from None
        if ys.shape != yt.shape:
            note = f"shapes differ: source {ys.shape}, target {yt.shape}"
            out_abs, out_tol = float("inf"), 0.0
        else:
            tol = tm.real_model_two_frameworks(fan_ins(source, sf), float(np.max(np.abs(ys))))
            out_abs, out_tol = float(np.max(np.abs(ys - yt))), tol.atol
            ok = out_abs <= out_tol
            note = (f"max abs difference {out_abs:.3g} {'within' if ok else 'BEYOND'} tolerance {out_tol:.3g} "
                    f"({tol.why})")
            if ok and any(l.changes for l in layers):
                note += "; they agree in inference now, but the changes below alter what training does to the " \
                        "running statistics or the normalization"
            if not ok and not any(l.changes for l in layers):
                note += "; every BatchNorm agrees, so the difference comes from elsewhere (kernels, their layout, " \
                        "padding)"
    return DiffReport(sf, tf_, layers, out_abs, out_tol, note)


def _to_axis(x, src_axis: int, dst_axis: int | None):
    """x with its channel axis moved from the source's to the target's (None: unchanged)."""
    if x is None or dst_axis is None:
        return x
    src, dst = src_axis % x.ndim, dst_axis % x.ndim
    return x if src == dst else np.ascontiguousarray(np.moveaxis(x, src, dst))
