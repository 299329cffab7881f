"""The "compiled and transformed" view: per adapter, one row per path of its compile lane and one column per
property group (training output, running statistics, inference after the switch, gradients, momentum=None, facts,
freeze idioms). A cell says whether the path matches eager (and the oracle) in that group, and the largest deviation
from eager it measured. Reads only "check" records of suites/test_compiled.py (area "compiled").
"""

from __future__ import annotations

from collections import OrderedDict

# Column -> the property-name prefixes (as test_compiled.py writes them) that feed it.
GROUPS = OrderedDict([
    ("training output", ("compiled_train_output",)),
    ("running stats (1, 5 steps)", ("compiled_running_",)),
    ("inference after switch", ("compiled_eval_",)),
    ("gradients", ("compiled_grads", "compiled_dx", "compiled_dscale", "compiled_doffset")),
    ("momentum=None", ("compiled_cumulative", "compiled_steps_tracked")),
    ("facts", ("compiled_path_fact",)),
    ("freeze idioms", ("compiled_freeze",)),
])


def _group(prop: str) -> str | None:
    return next((g for g, prefixes in GROUPS.items() if prop.startswith(prefixes)), None)


def _cell(recs: list[dict]) -> dict:
    failed = [r for r in recs if r.get("passed") is not True]
    devs = [float(r["max_abs_err"]) for r in recs if "_vs_eager" in str(r.get("property"))
            and isinstance(r.get("max_abs_err"), (int, float))]
    facts = sorted({f"{r['property']}: {r.get('observed')}" for r in recs if "_vs_" not in str(r.get("property"))})
    title = "; ".join(facts[:6] + [str(r.get("message", ""))[:300] for r in failed[:3]])
    raises = sorted({str(r.get("observed")).removeprefix("error:") for r in recs
                     if str(r.get("observed", "")).startswith("error:")})
    return {"ok": not failed, "n": len(recs), "failed": len(failed), "dev": max(devs) if devs else None,
            "raises": ", ".join(raises), "title": title}


def view(checks: list[dict], order: dict) -> list[dict]:
    """[{adapter, columns, rows: [{path, how, cells: [cell or None per column]}]}] in the report's adapter order."""
    by_adapter: dict[str, OrderedDict] = {}
    for r in checks:
        if r.get("area") != "compiled" or not r.get("path"):
            continue
        group = _group(str(r.get("property", "")))
        if group is None:
            continue
        paths = by_adapter.setdefault(str(r.get("adapter")), OrderedDict())
        row = paths.setdefault(str(r["path"]), {"how": r.get("how", ""), "groups": {}})
        row["groups"].setdefault(group, []).append(r)
    out = []
    for adapter in sorted(by_adapter, key=lambda a: order.get(a, len(order))):
        rows = [{"path": path, "how": row["how"],
                 "cells": [_cell(row["groups"][g]) if g in row["groups"] else None for g in GROUPS]}
                for path, row in by_adapter[adapter].items()]
        out.append({"adapter": adapter, "columns": list(GROUPS), "rows": rows})
    return out
