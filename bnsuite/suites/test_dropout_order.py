"""BatchNorm and Dropout order: the "variance shift" of Li, Chen, Hu and Yang (CVPR 2019).

Two blocks, Dropout -> BN and BN -> Dropout, over several drop rates. Exact checks: every layer equals the float64
oracle in training (with the Dropout mask read off the framework's output) and inference, the running statistics
after the training step equal the oracle update, and Dropout scales as declared (inverted: kept values times 1/q at
training time, the identity at inference; q = 1 - rate). Statistical checks (the masks are random; bounds and their
false-alarm rate in suites/tolerances/): the fraction Dropout keeps, the variance of Dropout's output in training
(the variance a BatchNorm after it sees), and the variance ratio inference / training against Li et al.'s
prediction Delta = v / (v/q + (1-q)/q c^2) for an input of mean c and variance v (derivation in
adapters/blocks/reference.py: li_variance_shift). Curves: the measured and predicted ratio by drop rate.
"""

import numpy as np

from bnsuite.adapters.blocks import BlockSpec
from bnsuite.adapters.blocks import reference as bref
from bnsuite.adapters import reference as bn_ref
from bnsuite.suites import block_layers as bl
from bnsuite.suites import checks as ch
from bnsuite.suites import summaries
from bnsuite.suites import tolerances as tl

RATES = (0.1, 0.3, 0.5)
ORDERS = ("dropout_bn", "bn_dropout")
N, FEATURES = 8192, 4
MEAN_SCALE = 2.0  # input means in [-2, 2]: c^2 comparable to v, so Li et al.'s mean term shows
MOMENTUM = 1.0  # the running statistics after the training step ARE that step's batch statistics
SUMMARY: list[dict] = []


def _var(a):
    return np.asarray(a, np.float64).var(axis=0)


def test_dropout_order(case, rec):
    decl = bl.declaration(case)
    scaling = decl.dropout_scaling
    x = bl.inputs(N, FEATURES, case.dtype, mean_scale=MEAN_SCALE)
    curves: dict[str, dict[str, list]] = {}
    for kind in ORDERS:
        for rate in RATES:
            q = 1.0 - rate
            spec = BlockSpec(kind, FEATURES, rate=rate, momentum=MOMENTUM, dtype=case.dtype, device=case.device)
            ops = [op[0] for op in spec.ops]
            d, b = ops.index("dropout"), ops.index("bn")
            w = bl.weights(spec)
            blk = bl.build(case, rec, spec, w)
            extra = {"block": kind, "rate": rate}
            tr = blk.forward(x, training=True, seed=17)
            after = blk.weights()
            inf = blk.forward(x, training=False)
            bl.check_layers(case, rec, spec, w, x, tr, True, extra)
            bl.check_layers(case, rec, spec, {**w, **after}, x, inf, False, extra)
            bn_in = bl.layer_input(tr, x, b)
            bl.check_running_stats(case, rec, spec, w, bn_in, after, extra)

            # Dropout's scaling, read off the outputs.
            d_in, d_out = bl.layer_input(tr, x, d), tr[d]
            keep = bl.dropout_masks(spec, tr, x)[0]
            elem = tl.elementwise(spec.dtype, 4, "Dropout scaling")
            kept_ratio = d_out[keep] / d_in[keep]
            ch.equal(rec, "dropout_training_scaling", scaling.value,
                     ch.classify(kept_ratio, {"inverted": np.full_like(kept_ratio, 1.0 / q),
                                              "classic": np.ones_like(kept_ratio)}, elem),
                     source=scaling.source, extra=extra)
            inf_in, inf_out = bl.layer_input(inf, x, d), inf[d]
            ch.equal(rec, "dropout_inference_scaling", scaling.value,
                     ch.classify(inf_out, {"inverted": inf_in, "classic": inf_in * q}, elem),
                     source=scaling.source, extra=extra)
            ch.close(rec, "dropout_keep_fraction", float(np.mean(keep)), q, tl.keep_fraction(keep.size, q),
                     declared=f"keep probability 1 - rate = {q:g}", extra=extra)

            # The variance after Dropout in training, against its expectation over the masks given the input.
            z = bref.forward(spec.ops[:d], w, x, training=True, rate=rate, eps=spec.eps)[-1] if d else x
            exp_s, se_s = bref.dropout_sample_variance(z, q)
            ch.close(rec, "variance_shift_train_variance", _var(d_out), exp_s,
                     tl.sampled(exp_s, se_s, "variance of Dropout's output in training"),
                     declared="E over masks of the sample variance (Li et al. at the sample moments)", extra=extra)

            # Inference / training variance ratio of Dropout's output vs Li et al.'s Delta at the input's moments.
            c, v = z.mean(axis=0), z.var(axis=0)
            delta = bref.li_variance_shift(c, v, q)
            if d:  # after a BatchNorm: at inference Dropout passes the BN's inference output
                est = bl.bn_estimator(case, FEATURES, N)
                rm, rv = bref.running_after_train(w, x, MOMENTUM, est)
                z_inf = bn_ref.forward_inference(x, w["bn.scale"], w["bn.offset"], rm, rv, spec.eps, axis=-1)
            else:
                z_inf = x
            a = _var(z_inf)
            ratio = _var(inf_out) / _var(d_out)
            ch.close(rec, "variance_shift_ratio", ratio, delta,
                     tl.sampled(delta, a * se_s / exp_s ** 2, "inference/train variance of Dropout's output",
                                bias=float(np.max(np.abs(a / exp_s - delta)))),
                     declared="Li et al. (CVPR 2019) Delta = v / (v/q + (1-q)/q c^2)", extra=extra)
            row = {"block": kind, "rate": rate, "measured": float(np.mean(ratio)), "li": float(np.mean(delta))}
            if not d:  # Dropout -> BN: the BatchNorm's output carries the same shift into the next layer
                est = bl.bn_estimator(case, FEATURES, N)
                f = N / (N - 1.0) if est == "unbiased" else 1.0
                r_at = a * (exp_s + spec.eps) / (exp_s * (f * exp_s + spec.eps))
                out_ratio = _var(inf[-1]) / _var(tr[-1])
                ch.close(rec, "variance_shift_bn_output_ratio", out_ratio, delta,
                         tl.sampled(delta, a * se_s / exp_s ** 2, "inference/train variance of the BN output",
                                    bias=float(np.max(np.abs(r_at - delta)))),
                         declared="Li et al. (CVPR 2019) Delta", extra=extra)
                row["bn_output_measured"] = float(np.mean(out_ratio))
            SUMMARY.append({"adapter": case.adapter.id, **row})
            cur = curves.setdefault(kind, {"x": [], "y": [], "ref": []})
            cur["x"].append(rate)
            cur["y"].append(row["measured"])
            cur["ref"].append(row["li"])
    if rec.writer is not None:
        base = rec.base
        for kind, cur in curves.items():
            rec.writer.write("curve", name="dropout_variance_shift", adapter=base["adapter"], device=base["device"],
                             dtype=base["dtype"], test=base["test"], block=kind, x=cur["x"], y=cur["y"],
                             y_reference=cur["ref"], xlabel="drop rate",
                             ylabel="variance of Dropout's output, inference / training (mean over features)")


def _line(r: dict) -> str:
    more = f", BN output {r['bn_output_measured']:.3f}" if "bn_output_measured" in r else ""
    return (f"  {r['adapter']:18s} {r['block']:11s} rate {r['rate']:.1f}: measured {r['measured']:.3f}, "
            f"Li et al. {r['li']:.3f}{more}")


summaries.register_rows("bnsuite: Dropout variance shift, inference/train variance of Dropout's output (measured vs "
                        "Li et al.)", SUMMARY, _line)
