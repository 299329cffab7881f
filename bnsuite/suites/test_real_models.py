"""Real architectures (torchvision, keras.applications, a linen ResNet-18) with random weights and collected
statistics: batch-size invariance in inference at real depth, and the freeze idioms after one real optimizer step.

Batch size: the same 64 samples go through at batch sizes 1, 8 and 64 in inference mode. Every layer maps each sample
on its own, so only the kernels' blocking may move an output: within the depth-derived bound of
suites/tolerances_models.py (batch size 1 on the first 8 samples). The probe (bnsuite.probe, tolerance 0, 16 samples
at batch sizes 1 and 8 against 16) names the first layer whose output departs at
all, its kind, and how many BatchNorm layers introduce a departure their input did not have; the deviation of every
BatchNorm output by depth is recorded as a curve.

Freeze: each framework declares, per idiom, whether one real optimizer step moves the running statistics, the scale
and the offset of all or none of the model's BatchNorm layers (bnsuite/models: freeze_idioms, cited); the step is
run and the layers that moved are counted.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest

from bnsuite.audit.read import read
from bnsuite.models import ARCHITECTURES, expected_count, images, moved, targets
from bnsuite.probe import find_batch_dependence
from bnsuite.suites import checks as ch
from bnsuite.suites import data, summaries
from bnsuite.suites import real_models as rm
from bnsuite.suites import tolerances_models as tm

FULL = 64
BATCH_SIZES = (1, 8, FULL)
# Samples compared at batch size 1 (each with its own output in the batch of 64: a prefix measures the same thing in
# 8 calls instead of 64), and samples the per-layer probe runs at batch sizes 1 and 8 against their batch of 16.
PREFIX = 8
PROBE = 16
SUMMARY: list[dict] = []
FREEZE: list[dict] = []
# What one optimizer step may move, and the property that checks it.
FREEZE_PROPERTIES = {"stats": "real_model_freeze_stats_moved", "scale": "real_model_freeze_scale_moved",
                     "offset": "real_model_freeze_offset_moved"}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_real_model_batch_size(case, rec, arch):
    models = rm.models_for(case, arch)
    t0 = time.perf_counter()
    model = rm.built(models, arch)
    rec.snippet = f"bnsuite.models: {models.framework} {models.architectures[arch].value}, random weights, " \
                  "statistics collected"
    x = images(FULL, data.seed_for(5))
    report = find_batch_dependence(models.probe_target(model), models.native(x[:PROBE]), batch_sizes=(1, 8, None),
                                   tol=0.0)
    y_full = models.infer(model, x)
    out = {FULL: y_full}
    for b in BATCH_SIZES[:-1]:
        n = max(PREFIX, b)
        out[b] = np.concatenate([models.infer(model, x[i:i + b]) for i in range(0, n, b)], axis=0)
    y_max = float(np.max(np.abs(y_full)))
    dev = {b: float(np.max(np.abs(out[b] - y_full[:len(out[b])]))) for b in BATCH_SIZES}
    tol = tm.real_model_two_batch_sizes(models.fan_ins(model), y_max)
    bns = [l for l in report.layers if rm._kind(l.type) == "BatchNorm" and l.comparable]
    why = rm.cause(report.layers, models.layer_inputs(model) if hasattr(models, "layer_inputs") else None)
    extra = {"arch": arch, "framework": models.framework, "constructor": models.architectures[arch].value,
             "bn_layers": len(bns), "batch_sizes": list(BATCH_SIZES), "max_abs_dev": [dev[b] for b in BATCH_SIZES],
             "max_rel_dev": [dev[b] / y_max for b in BATCH_SIZES], "bitwise": all(d == 0 for d in dev.values()),
             "versions": models.versions(), "seconds": round(time.perf_counter() - t0, 2), **why}
    if rec.writer is not None:
        b_ = rec.base
        rec.writer.write("curve", name="real_model_bn_deviation_by_depth", adapter=b_["adapter"], device=b_["device"],
                         dtype=b_["dtype"], test=b_["test"], arch=arch, x=list(range(1, len(bns) + 1)),
                         y=[l.max_rel for l in bns], xlabel="BatchNorm layer (execution order)",
                         ylabel="max relative deviation over batch sizes 1, 8")
    rec.record("real_model_batch_size_bitwise_invariant", declared="information, not asserted",
               observed=extra["bitwise"], passed=True, message="", **extra)
    # BatchNorm in inference is a per-channel affine map of each sample: it must not introduce a departure.
    rec.record("real_model_batchnorm_introduces_no_batch_dependence", declared=0, observed=why["bn_introduced"],
               passed=why["bn_introduced"] == 0,
               message="" if why["bn_introduced"] == 0 else
               f"real_model_batchnorm_introduces_no_batch_dependence: {why['bn_introduced']} BatchNorm layer(s) of "
               f"{arch} change a sample's output with the batch size while their input does not, declared 0 "
               f"{rec.where()}", **extra)
    if why["bn_introduced"]:
        rec.fail(rec.checks[-1]["message"])
    SUMMARY.append({"adapter": case.adapter.id, **extra, "tol_rel": tol.atol / y_max if y_max else 0.0})
    ch.close(rec, "real_model_inference_batch_size_invariance", np.concatenate([out[b] for b in BATCH_SIZES[:-1]]),
             np.concatenate([y_full[:len(out[b])] for b in BATCH_SIZES[:-1]]), tol,
             declared=f"output at batch size {FULL} (exact: identical)",
             extra={**extra, "tol_rel": tol.atol / y_max if y_max else 0.0})


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_real_model_freeze(case, rec, arch):
    models = rm.models_for(case, arch)
    x, t = images(8, data.seed_for(7)), targets(8, data.seed_for(7))
    probe_x = models.native(x[:2])
    for idiom in rm.idioms_for(models, arch):
        t0 = time.perf_counter()
        declared = models.freeze_idioms[idiom]
        if models.framework in ("keras", "tf_keras"):
            model = models.build(arch, idiom=idiom)  # the idiom is in how the base is wired
        elif models.framework == "torch":
            model = copy.deepcopy(rm.built(models, arch))
        else:
            model = rm.built(models, arch)  # Flax variables are immutable: the step returns new ones
        before = read(models.probe_target(model), probe_x)
        after = read(models.freeze_step(model, idiom, x, t), probe_x)
        counts = moved(before, after)
        n = counts["layers"]
        want = {k: expected_count(getattr(declared.value, k), n) for k in FREEZE_PROPERTIES}
        extra = {"arch": arch, "framework": models.framework, "idiom": idiom, "layers": n, "moved": counts,
                 "declared_moves": want, "source": declared.source, "seconds": round(time.perf_counter() - t0, 2)}
        FREEZE.append({"adapter": case.adapter.id, **extra})
        for k, prop in FREEZE_PROPERTIES.items():
            ok = counts[k] == want[k]
            msg = "" if ok else (f"{prop}: {idiom} on {arch}: {counts[k]} of {n} BatchNorm layers moved their {k} in "
                                 f"one optimizer step, declared {want[k]} ({declared.source}) {rec.where()}")
            rec.record(prop, declared=want[k], observed=counts[k], passed=ok, message=msg, **extra)
            if not ok:
                rec.fail(msg)


def _line(r: dict) -> str:
    devs = "  ".join(f"b{b}:{d:.2g}" for b, d in zip(r["batch_sizes"], r["max_rel_dev"]))
    first = f"first departs {r['first_layer']} ({r['first_kind']})" if r["first_layer"] else "bitwise invariant"
    return (f"  {r['adapter']:16s} {r['arch']:15s} {r['bn_layers']:3d} BN  rel {devs} (tol {r['tol_rel']:.2g})  "
            f"{first}; {r['seconds']:.1f} s")


def _freeze_line(r: dict) -> str:
    m = r["moved"]
    return (f"  {r['adapter']:16s} {r['arch']:15s} {r['idiom']:34s} moved of {r['layers']}: stats {m['stats']}, "
            f"scale {m['scale']}, offset {m['offset']}; {r['seconds']:.1f} s")


summaries.register_rows(f"bnsuite: real architectures, inference deviation from batch {FULL}", SUMMARY, _line)
summaries.register_rows("bnsuite: real architectures, BatchNorm layers moved by one step per freeze idiom", FREEZE,
                        _freeze_line)
