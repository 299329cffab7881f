"""The real architectures in the report: the batch-size table (deviation at batch sizes 1 and 8 from 64, the first
layer that departs and its kind) and the freeze table (BatchNorm layers moved by one step per idiom), read from the
check records of suites/test_real_models.py."""

from __future__ import annotations

from bnsuite.reports.values import num, sci

BITWISE = "real_model_batch_size_bitwise_invariant"
BOUND = "real_model_inference_batch_size_invariance"
INTRODUCED = "real_model_batchnorm_introduces_no_batch_dependence"
FREEZE = ("real_model_freeze_stats_moved", "real_model_freeze_scale_moved", "real_model_freeze_offset_moved")


def batch_table(checks: list[dict], order: dict) -> list[dict]:
    """One row per (architecture, adapter): sorted by architecture, then adapter order."""
    judged: dict = {}
    for c in checks:
        if c.get("property") in (BOUND, INTRODUCED):
            key = (c.get("adapter"), c.get("arch"))
            judged[key] = judged.get(key, True) and c.get("passed") is True
    bounds = {(c.get("adapter"), c.get("arch")): c for c in checks if c.get("property") == BOUND}
    rows = []
    for c in checks:
        if c.get("property") != BITWISE:
            continue
        key = (c.get("adapter"), c.get("arch"))
        sizes = c.get("batch_sizes") or []
        rel = dict(zip(sizes, c.get("max_rel_dev") or []))
        b = bounds.get(key, {})
        y = num(b.get("max_abs_err"))
        rows.append({
            "arch": str(c.get("arch")), "adapter": str(c.get("adapter")), "constructor": str(c.get("constructor")),
            "bn_layers": c.get("bn_layers"), "rel1": sci(num(rel.get(1))), "rel8": sci(num(rel.get(8))),
            "bitwise": bool(c.get("observed")),
            "first": (f"{c.get('first_layer')} ({c.get('first_kind')})" if c.get("first_layer") else "none"),
            "introduced": c.get("bn_introduced"), "tol": sci(num(b.get("tol_rel"))),
            "tol_why": str(b.get("tol_why", "")),
            "seconds": c.get("seconds"), "ok": judged.get(key, False), "max_abs": sci(y)})
    rows.sort(key=lambda r: (r["arch"], order.get(r["adapter"], len(order))))
    return rows


def freeze_table(checks: list[dict], order: dict) -> list[dict]:
    """One row per (adapter, architecture, idiom) with "moved of layers" for stats, scale and offset."""
    rows: dict = {}
    for c in checks:
        if c.get("property") not in FREEZE:
            continue
        key = (str(c.get("adapter")), str(c.get("arch")), str(c.get("idiom")))
        kind = c["property"].split("_")[3]
        r = rows.setdefault(key, {"adapter": key[0], "arch": key[1], "idiom": key[2], "layers": c.get("layers"),
                                  "ok": True, "source": str(c.get("source", ""))})
        r[kind] = f"{c.get('observed')} of {c.get('layers')}"
        r[f"{kind}_declared"] = c.get("declared")
        r["ok"] = r["ok"] and c.get("passed") is True
    return sorted(rows.values(), key=lambda r: (order.get(r["adapter"], len(order)), r["arch"], r["idiom"]))
