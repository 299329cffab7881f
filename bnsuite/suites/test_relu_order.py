"""BatchNorm before vs after ReLU: linear -> BN -> ReLU and linear -> ReLU -> BN, the same weights in every framework.

Checked: every layer of both orders equals the float64 oracle in training and inference mode, the BatchNorm's
running statistics after the training step equal the oracle update, and the number of exact zeros the BatchNorm
normalizes (after a ReLU) equals the oracle's. Measured (the report's table and curves): what the BatchNorm
normalizes (fraction of zeros, mean and variance of its input) and the statistics of the block's output in training
mode, over a shift of the pre-activation mean (added to the linear layer's bias).
"""

import numpy as np

from bnsuite.adapters.blocks import BlockSpec
from bnsuite.adapters.blocks import reference as bref
from bnsuite.suites import block_layers as bl
from bnsuite.suites import checks as ch
from bnsuite.suites import summaries

ORDERS = ("linear_bn_relu", "linear_relu_bn")
SHIFTS = (-1.0, 0.0, 1.0)  # added to the linear layer's bias: the pre-activation mean, in units of its spread ~0.6
N, IN = 64, 6
MOMENTUM = 0.1
ROWS: list[dict] = []
CURVES = {"bn_input_zero_fraction_train": "fraction of zeros the BatchNorm normalizes",
          "bn_input_var_train": "variance of the BatchNorm's input (train)",
          "output_zero_fraction_train": "fraction of zeros in the block output (train)",
          "output_mean_train": "block output mean (train)", "output_var_train": "block output variance (train)"}


def _stats(a: np.ndarray) -> dict:
    return {"zero_fraction": float(np.mean(a == 0)), "mean": float(np.mean(a)), "var": float(np.mean(np.var(a, 0)))}


def test_relu_order(case, rec):
    x = bl.inputs(N, IN, case.dtype)
    mine: list[dict] = []
    for kind in ORDERS:
        spec = BlockSpec(kind, IN, momentum=MOMENTUM, dtype=case.dtype, device=case.device)
        bn_at = [op[0] for op in spec.ops].index("bn")
        for shift in SHIFTS:
            w = bl.weights(spec, bias_shift=shift)
            blk = bl.build(case, rec, spec, w)
            extra = {"block": kind, "bias_shift": shift}
            inf = blk.forward(x, training=False)
            bl.check_layers(case, rec, spec, w, x, inf, False, extra)
            tr = blk.forward(x, training=True)
            bl.check_layers(case, rec, spec, w, x, tr, True, extra)
            bn_in = bl.layer_input(tr, x, bn_at)
            bl.check_running_stats(case, rec, spec, w, bn_in, blk.weights(), extra)
            want = bref.forward(spec.ops, w, x, training=True, rate=0.0, eps=spec.eps)
            ch.equal(rec, "relu_order_bn_input_zeros", int(np.sum(bref.bn_input(spec.ops, want, x) == 0)),
                     int(np.sum(bn_in == 0)), extra=extra,
                     source="oracle: ReLU before the BatchNorm makes exact zeros where the pre-activation is < 0")
            pre = x @ w["dense.kernel"].T + w["dense.bias"]
            row = {"adapter": case.adapter.id, "block": kind, "bias_shift": shift,
                   "pre_activation_negative_fraction": float(np.mean(pre < 0))}
            # Training mode only: inference normalizes with whatever running statistics the layer holds.
            for what, a in (("bn_input", bn_in), ("output", tr[-1])):
                row.update({f"{what}_{k}_train": v for k, v in _stats(a).items()})
            mine.append(row)
    ROWS.extend(mine)
    if rec.writer is None:
        return
    b = rec.base
    cols = list(mine[0])
    rec.writer.write("table", name=f"relu_order_statistics ({b['adapter']}, {b['device']}, {b['dtype']})",
                     test=b["test"], columns=cols, rows=[[r[c] for c in cols] for r in mine])
    for kind in ORDERS:
        rows = [r for r in mine if r["block"] == kind]
        for key, label in CURVES.items():
            rec.writer.write("curve", name=f"relu_order_{key}", adapter=b["adapter"], device=b["device"],
                             dtype=b["dtype"], test=b["test"], block=kind,
                             x=[r["pre_activation_negative_fraction"] for r in rows], y=[r[key] for r in rows],
                             xlabel="fraction of pre-activations < 0", ylabel=label)


def _line(r: dict) -> str:
    return (f"  {r['adapter']:18s} {r['block']:15s} shift {r['bias_shift']:+.1f}  BN input "
            f"{r['bn_input_zero_fraction_train']:.2f}/{r['bn_input_mean_train']:+.3f}/"
            f"{r['bn_input_var_train']:.3f}  output {r['output_zero_fraction_train']:.2f}/"
            f"{r['output_mean_train']:+.3f}/{r['output_var_train']:.3f}")


summaries.register_rows("bnsuite: BatchNorm before vs after ReLU (train mode; zero fraction / mean / var)", ROWS,
                        _line)
