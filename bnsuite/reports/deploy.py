"""The report's "deploying" table, from the deploy suite's "matrix" records (name "deploy": one per model run in a
runtime; name "deploy_export": one per ONNX export, its BatchNormalization node's attributes). Reads records only."""

from __future__ import annotations

from bnsuite.reports.values import fmt


def _num(v) -> str:
    return "" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))


def _export_cells(e: dict | None) -> dict:
    """What survives in the exported file: eps, momentum, training_mode, the stored state, the batch dimension."""
    if e is None:
        return {"node": "n/a", "eps": "n/a", "momentum": "n/a", "training_mode": "n/a", "state": "", "batch": ""}
    bn = e.get("bn_node") == "BatchNormalization"
    return {"node": "BatchNormalization" if bn else "none (folded or lowered)",
            "eps": _num(e.get("epsilon")) if bn else "numerically only",
            "momentum": _num(e.get("momentum")) if bn and e.get("momentum") is not None else ("unset" if bn else "—"),
            "training_mode": _num(e.get("training_mode") or 0) if bn else "—",
            "state": {True: "kept", False: "CHANGED", None: "—"}.get(e.get("keeps_state"), "—"),
            "batch": fmt(e.get("batch_dim", ""))}


def deploying(runs: list[dict], exports: list[dict], order: dict[str, int]) -> list[dict]:
    """One group per adapter: a row per (model, exporter, mode, runtime) with what the export carries, which
    statistics the run normalized with (declared / observed), the errors against the oracle and the framework, the
    runtime's precision and whether BatchNorm was folded. Empty where no deploy records exist."""
    by_export = {(str(e.get("adapter")), str(e.get("model")), str(e.get("exporter")), str(e.get("mode"))): e
                 for e in exports}
    groups: dict[str, list[dict]] = {}
    for r in runs:
        adapter = str(r.get("adapter"))
        key = (adapter, str(r.get("model")), str(r.get("exporter")), str(r.get("mode")))
        declared, observed = str(r.get("declared_statistics")), str(r.get("observed_statistics"))
        source_mode = {"eval": "eval", "training": "train", "train-model": "train",
                       "preserve-frozen": "train, BN frozen"}.get(key[3], "eval")
        source_stats = "batch" if source_mode == "train" else "running"
        row = {"model": key[1], "exporter": key[2], "mode": key[3], "runtime": str(r.get("runtime")),
               "source_mode": source_mode, "statistics": observed, "declared": declared,
               "mode_survives": observed == source_stats,
               "err_oracle": _num(r.get("err_oracle")), "tol": _num(r.get("tol_oracle")),
               "err_framework": _num(r.get("err_framework")), "precision": str(r.get("precision", "")),
               "folding": str(r.get("folding", "")), "passed": r.get("passed") is not False,
               "running_var": str(r.get("running_var", "")),
               "source_estimator": str(r.get("source_estimator", "")),
               **_export_cells(by_export.get(key))}
        groups.setdefault(adapter, []).append(row)
    out = []
    for adapter in sorted(groups, key=lambda a: (order.get(a, len(order)), a)):
        rows = sorted(groups[adapter], key=lambda x: (x["exporter"], x["mode"], x["runtime"], x["model"]))
        out.append({"adapter": adapter, "rows": rows, "failed": sum(not x["passed"] for x in rows)})
    return out
