"""What the audit's meta checks measure from one real training step (the weight a framework gave the new batch mean
in its running mean, with its derived bound from suites/tolerances_audit.py), and the checks of an audit against it."""

import numpy as np

from bnsuite.suites import tolerances_audit


def new_statistic_weight(m0, m1, x, channel_axis: int = -1) -> dict:
    """{"weight", "tol"}: the least-squares w of (m1 - m0) = w (batch mean of x - m0) over the channels."""
    x = np.asarray(x, np.float64)
    axes = tuple(a for a in range(x.ndim) if a != channel_axis % x.ndim)
    m0, m1 = np.asarray(m0, np.float64), np.asarray(m1, np.float64)
    d = x.mean(axis=axes) - m0
    s_max = float(max(np.max(np.abs(m0)), np.max(np.abs(m1)), np.max(np.abs(d + m0))))
    tol = tolerances_audit.update_weight(int(x.size // d.size), float(np.max(np.abs(x))), s_max,
                                         float(np.min(np.abs(d))))
    return {"weight": float(np.dot(m1 - m0, d) / np.dot(d, d)), "tol": tol}


def check_momentum_measured(layers, measured):
    """The audited weight of the new statistic is the one a real training step gave it (layers whose statistics
    moved), within the derived bound of suites/tolerances_audit.py."""
    __tracebackhide__ = True
    for l in layers:
        m = measured[l["name"]]
        if m["stats_moved"]:
            assert abs(l["momentum"] - m["weight"]) <= m["tol"], \
                f"{l['framework']} {l['name']}: momentum (weight of the new statistic) audited {l['momentum']}, " \
                f"measured {m['weight']:.6g} (bound {m['tol']:.3g}; native {l['momentum_native']})"


def check_freeze_measured(layers, measured):
    """What the audit says a training step does (stats_still, frozen) is what one real step did."""
    __tracebackhide__ = True
    for l in layers:
        m = measured[l["name"]]
        assert l["stats_still"] == (not m["stats_moved"]), f"{l['name']}: stats_still {l['stats_still']}, " \
                                                           f"statistics moved {m['stats_moved']}"
        assert l["frozen"] == (not m["gamma_moved"]), f"{l['name']}: frozen {l['frozen']}, " \
                                                      f"scale moved {m['gamma_moved']}"
