"""Freeze semantics in a real fine-tuning step: the conv -> BN -> ReLU -> pool -> dense network with its BatchNorm
frozen by each idiom the adapter declares, ONE training step (MSE loss, gradients, the framework's own optimizer), then
which state moved and by how much: BN running statistics, BN scale/offset, conv/dense weights.

The BN facts must equal the adapter's declaration for the idiom (the same declaration suites/test_freeze.py checks
on a lone layer); the conv/dense weights must move, except under an idiom that stops every gradient
(torch.no_grad), where they must not.
"""

import numpy as np
import pytest

from bnsuite.suites import summaries
from bnsuite.adapters import nets
from bnsuite.adapters.base import Unsupported
from bnsuite.suites import checks as ch
from bnsuite.suites import data
from bnsuite.suites.cases import freeze_params, freeze_step_of
from bnsuite.suites.networks import ARCH, LR, build, fixed_batches

# Idioms that stop the gradient of the WHOLE network, not only of the BN layers.
STOPS_ALL_GRADIENTS = {"no_grad"}
MATRIX: list[dict] = []
PER_CASE = {"freeze_idiom": freeze_params}


def _moved(before, after, keys):
    change = max((float(np.max(np.abs(after[k] - before[k]))) for k in keys if k in after and k in before),
                 default=0.0)
    moved = any(k in after and k in before and np.any(after[k] != before[k]) for k in keys)
    return bool(moved), change


def test_finetune_step(case, rec, freeze_idiom):
    declared = case.decl.freeze[freeze_idiom]
    facts = declared.value
    implemented = freeze_step_of(case, freeze_idiom)
    if implemented.network:
        pytest.skip(f"{case.adapter.id}: {freeze_idiom}: {implemented.network}")
    cl = case.decl.default_channels_last.value
    w0 = nets.init_weights(ARCH, seed=data.seed_for(2), dtype=case.dtype)
    net = build(case, ARCH, w0, cl, bn_idiom=freeze_idiom)
    rec.snippet = f"bnsuite.adapters.nets.build_network({case.adapter.id!r}, {ARCH!r}, ..., bn_idiom={freeze_idiom!r})"
    (x, t), = fixed_batches(case.dtype, cl, 1, seed=31)
    before = net.get_weights()
    extra = {"idiom": freeze_idiom, "arch": ARCH}
    row = {"adapter": case.adapter.id, "device": case.device, "idiom": freeze_idiom}
    try:
        net.sgd_step(x, t, LR)
    except Unsupported as e:
        pytest.fail(f"{case.adapter.id}: declared freeze idiom {freeze_idiom!r} cannot run on its network: {e}",
                    pytrace=False)
    except Exception as e:  # the framework refuses the idiom: that is the observed fact
        name = type(e).__name__
        MATRIX.append({**row, "error": name, "declared_error": facts.error})
        ch.equal(rec, "finetune_error", facts.error, name, source=declared.source,
                 extra={**extra, "detail": str(e).splitlines()[0][:300] if str(e) else ""})
        return
    after = net.get_weights()
    bns = nets.bn_names(ARCH)
    stats_moved, stats_change = _moved(before, after, [f"{n}.{s}" for n in bns for s in ("mean", "var")])
    params_moved, params_change = _moved(before, after, [f"{n}.{s}" for n in bns for s in ("scale", "offset")])
    others = [k for k in nets.param_names(ARCH) if not k.startswith(tuple(f"{n}." for n in bns))]
    others_moved, others_change = _moved(before, after, others)
    want_others = freeze_idiom not in STOPS_ALL_GRADIENTS
    MATRIX.append({**row, "error": None, "stats": (stats_moved, stats_change), "params": (params_moved, params_change),
                   "others": (others_moved, others_change),
                   "ok": (stats_moved, params_moved, others_moved) == (facts.running_stats_update,
                                                                        facts.params_update, want_others)
                   and facts.error is None})
    ch.equal(rec, "finetune_error", facts.error, None, source=declared.source, extra=extra)
    ch.equal(rec, "finetune_bn_running_stats_update", facts.running_stats_update, stats_moved,
             source=declared.source, extra={**extra, "max_change": stats_change})
    ch.equal(rec, "finetune_bn_params_update", facts.params_update, params_moved, source=declared.source,
             extra={**extra, "max_change": params_change})
    ch.equal(rec, "finetune_conv_dense_update", want_others, others_moved,
             source="an idiom that freezes BN leaves the other layers training"
             if want_others else "the idiom disables gradients for the whole network",
             extra={**extra, "max_change": others_change})


def _line(r: dict) -> str:
    if r["error"] is not None:
        mark = "ok " if r["error"] == r["declared_error"] else "MISMATCH"
        return f"  {mark} {r['adapter']:16s} {r['device']:4s} {r['idiom']:38s} error {r['error']}"
    f = lambda p: f"{'moved' if p[0] else 'kept '} {p[1]:.2g}"
    mark = "ok " if r["ok"] else "MISMATCH"
    return (f"  {mark} {r['adapter']:16s} {r['device']:4s} {r['idiom']:38s} stats {f(r['stats'])}  "
            f"params {f(r['params'])}  conv/dense {f(r['others'])}")


summaries.register_rows("bnsuite: fine-tuning step with frozen BN (running stats / BN params / conv+dense: max change)",
                        MATRIX, _line)
