"""Cross-framework equivalence of a whole (small) network: conv 3x3 -> BN -> ReLU -> global average pool -> dense,
built in the adapter's framework from the same seeded canonical weights, trained 3 steps of plain SGD (the framework's
own optimizer, MSE loss) on the same fixed batches, then compared with the float64 reference network run with the
running-variance estimator the adapter DECLARES for the path its rank-4 BatchNorm takes.

Compared: the loss of every step, every weight after training (conv, BN scale/offset, dense), the BN running
statistics and the inference-mode output on a fresh batch, each within the bounds of suites/tolerances/. Every
framework is compared with the same oracle, so two frameworks agree within the sum of their two tolerances.

The kernel layouts each network declares (the porting guide's OIHW / HWIO table) are checked against the kernels the
framework holds, in both architectures: the training network's 3x3 conv has as many input channels as kernel rows, so
only bn_stack's 1x1 convs (3, 7, ... input channels) tell the input axis from the spatial ones. Square kernels cannot
tell kh from kw.
"""

import numpy as np
import pytest

from bnsuite.adapters import nets
from bnsuite.suites import checks as ch
from bnsuite.suites import data
from bnsuite.suites import summaries
from bnsuite.suites import tolerances as tl
from bnsuite.suites.networks import ARCH, EPS, LR, MOMENTUM, build, fixed_batches

# The property of each SGD step's loss, and of each weight (parameters, then the BN running statistics).
LOSS_PROPERTIES = ("network_loss_step1", "network_loss_step2", "network_loss_step3")
STEPS = len(LOSS_PROPERTIES)
WEIGHT_PROPERTIES = {
    "conv.kernel": "network_weight_conv.kernel", "conv.bias": "network_weight_conv.bias",
    "bn.scale": "network_weight_bn.scale", "bn.offset": "network_weight_bn.offset",
    "dense.kernel": "network_weight_dense.kernel", "dense.bias": "network_weight_dense.bias",
    "bn.mean": "network_weight_bn.mean", "bn.var": "network_weight_bn.var",
}
SUMMARY: list[dict] = []


def test_network_equivalence(case, rec):
    decl = case.decl
    cl = decl.default_channels_last.value
    w0 = nets.init_weights(ARCH, seed=data.seed_for(0), dtype=case.dtype)
    net = build(case, ARCH, w0, cl)
    code_path = net.code_path()
    estimator = decl.estimator_for(code_path)
    rec.snippet = (f"from bnsuite.adapters import nets, registry\nnet = nets.build_network(registry.load("
                   f"{case.adapter.id!r}), {ARCH!r}, ...)  # BN path {code_path!r}")
    refnet = nets.ReferenceNet(ARCH, w0, channels_last=cl, eps=EPS, momentum=MOMENTUM, estimator=estimator)
    other = "biased" if estimator == "unbiased" else "unbiased"
    altnet = nets.ReferenceNet(ARCH, w0, channels_last=cl, eps=EPS, momentum=MOMENTUM, estimator=other)
    bounds = tl.NetTrainingBounds(case.dtype, LR, MOMENTUM, estimator)
    batches = fixed_batches(case.dtype, cl, STEPS)
    loss_ref, loss_fw = [], []
    for x, t in batches:
        loss_ref.append(refnet.sgd_step(x, t, LR))
        bounds.after_step(refnet, loss_ref[-1], t)
        altnet.sgd_step(x, t, LR)
        loss_fw.append(float(net.sgd_step(x, t, LR)))
    (x_eval, _), = fixed_batches(case.dtype, cl, 1, seed=99)
    y_ref = refnet.forward(x_eval, training=False)
    tol_out = tl.net_output(refnet.layers, case.dtype, steps_before=STEPS)
    y_fw = net.forward(x_eval, training=False)
    w_ref, w_fw = refnet.get_weights(), net.get_weights()

    extra = {"arch": ARCH, "code_path": code_path, "estimator": estimator, "steps": STEPS, "lr": LR}
    steps = list(range(1, STEPS + 1))
    if rec.writer is not None:
        b = rec.base
        rec.writer.write("curve", name="network_loss_per_sgd_step", adapter=b["adapter"], device=b["device"],
                         dtype=b["dtype"], test=b["test"], x=steps, y=loss_fw, y_reference=loss_ref,
                         xlabel="SGD step", ylabel="MSE loss (before the step)", arch=ARCH)
        rec.writer.write("table", name=f"network losses per step ({b['adapter']}, {b['device']}, {b['dtype']})",
                         columns=["step", "framework loss", "reference loss", "abs diff", "tolerance"],
                         rows=[[s, lf, lr_, abs(lf - lr_), bounds.loss(s).atol]
                               for s, lf, lr_ in zip(steps, loss_fw, loss_ref)])
    diffs = {"loss": max(abs(a - b) for a, b in zip(loss_fw, loss_ref)),
             "output": float(np.max(np.abs(y_fw - y_ref))) if y_fw.shape == y_ref.shape else float("nan")}
    stat_keys = [k for k in w_ref if k.endswith((".mean", ".var"))]
    param_keys = nets.param_names(ARCH)
    for group, keys in (("weights", param_keys), ("running_stats", stat_keys)):
        diffs[group] = max(float(np.max(np.abs(w_fw[k] - w_ref[k]))) for k in keys if k in w_fw)
    SUMMARY.append({"adapter": case.adapter.id, "device": case.device, "dtype": case.dtype, **diffs})

    # The running variance must tell the declared estimator from the other one.
    var_key = stat_keys[-1]
    effect = float(np.max(np.abs(altnet.w[var_key] - w_ref[var_key]) / np.abs(w_ref[var_key])))
    tl.assert_separable(bounds.weight(var_key).atol / float(np.min(np.abs(w_ref[var_key]))), effect,
                        f"the {estimator} from the {other} running variance")

    # The loss the framework reports is the batch's, or the mean since compile where the framework declares so; the
    # bound of step s covers the mean of steps 1..s, since the per-step bounds grow with s.
    rule = net.reported_loss
    reported_ref = loss_ref if rule.value == "batch" else [float(np.mean(loss_ref[:s])) for s in steps]
    for s, prop in zip(steps, LOSS_PROPERTIES):
        ch.close(rec, prop, loss_fw[s - 1], reported_ref[s - 1], bounds.loss(s),
                 declared=f"reference network ({rule.value} loss)", source=rule.source,
                 extra={**extra, "reported_loss": rule.value})
    assert set(WEIGHT_PROPERTIES) == set(param_keys + stat_keys), "WEIGHT_PROPERTIES must name every weight of ARCH"
    for k in param_keys + stat_keys:
        if k not in w_fw:
            ch.equal(rec, WEIGHT_PROPERTIES[k], "present", "missing", extra=extra)
            continue
        ch.close(rec, WEIGHT_PROPERTIES[k], w_fw[k], w_ref[k], bounds.weight(k),
                 declared=f"reference network ({estimator} running variance)" if k in stat_keys
                 else "reference network", extra=extra)
    ch.close(rec, "network_inference_output", y_fw, y_ref, tol_out, declared="reference network", extra=extra)


@pytest.mark.parametrize("arch", nets.ARCHS)
def test_network_weight_layout(case, rec, arch):
    """The conv and dense kernels the framework holds have the shapes its declared weight layout predicts."""
    cl = case.decl.default_channels_last.value
    net = build(case, arch, nets.init_weights(arch, seed=data.seed_for(0), dtype=case.dtype), cl)
    layout = net.weight_layout
    rec.snippet = (f"from bnsuite.adapters import nets, registry\nnet = nets.build_network(registry.load("
                   f"{case.adapter.id!r}), {arch!r}, ...)\nprint(net.native_kernel_shapes())")
    declared = nets.declared_kernel_shapes(layout.value, arch)  # Unsupported (a skip, no record) if undeclared
    observed = net.native_kernel_shapes()
    if rec.writer is not None and arch == ARCH:  # the porting guide's table, with the check's verdict
        b = rec.base
        rec.writer.write("matrix", name="weight_layout", adapter=b["adapter"], device=b["device"], test=b["test"],
                         layout=layout.value, source=layout.source, checked=declared == observed)
    axes = {k: layout.value.get(f"{k} axes") for k in ("conv", "dense")}
    ch.equal(rec, "network_weight_layout", declared, observed,
             source=layout.source, extra={"arch": arch, "detail": f"declared conv {axes['conv']}, dense "
                                          f"{axes['dense']}; kernel name -> shape the framework holds"})


def _line(r: dict) -> str:
    return (f"  {r['adapter']:16s} {r['device']:4s} {r['dtype']:8s} loss {r['loss']:.3g}  weights "
            f"{r['weights']:.3g}  running stats {r['running_stats']:.3g}  outputs {r['output']:.3g}")


summaries.register_rows(f"bnsuite: network equivalence, max |framework - reference| after {STEPS} SGD steps",
                        SUMMARY, _line)
