"""The report's "folding and quantization" table: one row per (adapter, path, model) from the folding suite's check
records (properties folding_*): what survives the path (eps, momentum, the training flag, affine,
track_running_stats; folded away or not), what it does to a model in train mode, whether a training-mode forward
moves the running statistics and which statistics it normalizes with, and the largest deviation of the path's
inference output from the eager model and from the float64 oracle. Reads records only."""

from __future__ import annotations

from collections import OrderedDict

from bnsuite.reports.values import fmt

ATTRS = ("eps", "momentum", "training", "affine", "track_running_stats")


def _num(v) -> str:
    return f"{v:.3g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else fmt(v)


def _cell(check: dict | None) -> dict:
    """One attribute's cell: the observed value, whether it is the model's own (kept) and whether it is declared."""
    if check is None:
        return {"text": "", "state": "", "title": ""}
    obs, before = check.get("observed"), check.get("before")
    state = "kept" if obs == before else ("folded" if obs == "folded away" else "changed")
    title = f"model: {fmt(before)}; declared: {fmt(check.get('declared'))}; {check.get('source', '')}"
    return {"text": fmt(obs) if state != "kept" else f"{fmt(obs)} (kept)", "state": state,
            "ok": check.get("passed") is True, "title": title}


def folding_table(checks: list[dict], order: dict[str, int] | None = None) -> list[dict]:
    rows: "OrderedDict[tuple, dict]" = OrderedDict()
    for c in checks:
        prop = str(c.get("property", ""))
        if not prop.startswith("folding_") or "path" not in c:
            continue
        key = (str(c.get("adapter")), str(c["path"]), str(c.get("model")))
        row = rows.setdefault(key, {"adapter": key[0], "path": key[1], "model": key[2], "checks": {},
                                    "failed": []})
        row["checks"][prop] = c
        if c.get("passed") is not True:
            row["failed"].append(prop)
    out = []
    for row in rows.values():
        ch = row.pop("checks")
        folded = ch.get("folding_bn_folded", {}).get("observed")
        row["attrs"] = [{"text": "folded", "state": "folded", "ok": True, "title": "the BatchNorm is folded into "
                         "the preceding layer"} if folded is True and f"folding_bn_{a}" not in ch
                        else _cell(ch.get(f"folding_bn_{a}")) for a in ATTRS]
        row["train_model"] = fmt(ch.get("folding_train_model", {}).get("observed", ""))
        row["train_stats"] = fmt(ch.get("folding_train_output_stats", {}).get("observed", "-"))
        moved = ch.get("folding_stats_move", {}).get("observed")
        momentum = ch.get("folding_running_stats_momentum", {}).get("observed")
        row["stats_move"] = "-" if moved is None else (
            ("move" + (f" (momentum {momentum})" if momentum else "")) if moved else "frozen")
        row["vs_eager"] = _num(ch.get("folding_output_vs_eager", {}).get("max_abs_err"))
        row["vs_oracle"] = _num(ch.get("folding_output_vs_oracle", {}).get("max_abs_err"))
        row["tol"] = _num(ch.get("folding_output_vs_oracle", {}).get("atol"))
        row["runs"] = "folding_path_runs" not in row["failed"]
        out.append(row)
    rank = order or {}
    return sorted(out, key=lambda r: (rank.get(r["adapter"], len(rank)), r["adapter"]))
