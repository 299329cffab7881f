"""The full behaviour matrix: one row per measured property, grouped by area; one column per (adapter, device);
one short value per cell, with the details (declared, observed, sources, tests) in the cell's hover title.

Generic on purpose: a new suite's checks appear in their own area group with no change here.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from bnsuite.reports.order import area_of, col_key
from bnsuite.reports.values import fmt, num, sci, worst

SHORT = 16  # characters of a cell's one short value


def col_labels(cols: list[tuple[str, str]]) -> list[str]:
    """Adapter ids; the device only when more than one device appears."""
    several = len({d for _, d in cols}) > 1
    return [f"{a} · {d}" if several and d else a for a, d in cols]


def _short(values: list[str]) -> str:
    if len(values) == 1:
        return fmt(values[0], SHORT)
    return f"{len(values)} values"


def check_cell(checks: list[dict]) -> dict:
    """One cell: a short value (the observation, or the worst error where every check matched the oracle), and
    the details for the hover title."""
    failed = [c for c in checks if c.get("passed") is not True]
    shown = failed or checks  # a failing cell shows what went wrong first
    values = list(dict.fromkeys(fmt(c.get("observed"), 48) for c in shown))
    err = worst([e for c in checks if (e := num(c.get("max_abs_err"))) is not None])
    if values == ["matches"]:
        short = f"ok {sci(err)}" if err is not None else "ok"
    else:
        short = _short(values)
    sub = ""
    sources = defaultdict(list)
    for c in checks:
        if c.get("source_adapter"):
            sources[str(c["source_adapter"])].append(c)
    if sources:  # a porting cell: worst error over every source, and the sources that differ
        differ = [s for s, cs in sources.items()
                  if any(c.get("passed") is not True or (num(c.get("predicted_gap")) or 0) > 0 for c in cs)]
        sub = f"{len(differ)}/{len(sources)} sources differ" if differ else f"{len(sources)} sources"
    declared = list(dict.fromkeys(fmt(c.get("declared"), 60) for c in checks))
    srcs = list(dict.fromkeys(str(c.get("source") or "") for c in checks if c.get("source")))
    dtypes = list(dict.fromkeys(str(c.get("dtype", "")) for c in checks))
    lines = ([f"declared: {' | '.join(declared[:6])}" + (" | …" if len(declared) > 6 else ""),
              f"observed: {' | '.join(values[:4])}" + (" | …" if len(values) > 4 else ""),
              f"checks: {len(checks)} ({len(failed)} failed), dtypes: {', '.join(dtypes)}"]
             + ([f"worst max abs err: {sci(err)}"] if err is not None else []))
    if sources:
        lines += ["per source (worst max abs err):"] + [
            f"  {s}: {sci(worst([e for c in cs if (e := num(c.get('max_abs_err'))) is not None]))}"
            + ("  (differs)" if s in differ else "") for s, cs in sources.items()]
    tests = list(dict.fromkeys(str(c.get("test", "")) for c in checks))
    lines += [f"source: {s}" for s in srcs[:2]] + [f"test: {tests[0]}" + (f" (+{len(tests) - 1} more)" if len(tests) > 1
                                                                           else "")]
    return {"failed": bool(failed), "short": short, "sub": sub, "title": "\n".join(lines)}


def grid(items: list[tuple[str, str, tuple[str, str], dict]], order: dict[str, int],
         cell: Callable[[list[dict]], dict]) -> dict:
    """Groups of rows x (adapter, device) columns from (group, row, column, record) tuples.

    A row whose declared values differ (between adapters, or code paths) is a known divergence: its passing cells
    are marked as such, so a reader tells "frameworks differ by design" from "framework broke its contract"."""
    cols = sorted({c for _, _, c, _ in items}, key=lambda c: col_key(order, c))
    by_cell: dict[tuple, list[dict]] = defaultdict(list)
    rows_of: dict[str, dict[str, None]] = {}
    for g, r, c, rec in items:
        by_cell[(g, r, c)].append(rec)
        rows_of.setdefault(g, {})[r] = None
    groups = []
    for g, rows in rows_of.items():
        out_rows = []
        for r in rows:
            recs = [x for c in cols for x in by_cell.get((g, r, c), [])]
            diverges = len({fmt(x.get("declared")) for x in recs}) > 1
            cells = []
            for c in cols:
                lst = by_cell.get((g, r, c))
                if not lst:
                    cells.append({"state": "absent", "short": "—", "sub": "", "title": "not measured"})
                    continue
                d = cell(lst)
                d["state"] = "fail" if d["failed"] else ("diverge" if diverges else "pass")
                cells.append(d)
            out_rows.append({"name": r, "cells": cells, "diverges": diverges,
                             "failed": any(c["state"] == "fail" for c in cells)})
        groups.append({"name": g, "rows": out_rows, "failed": sum(r["failed"] for r in out_rows)})
    return {"cols": col_labels(cols), "groups": groups}


def behaviour_matrix(checks: list[dict], order: dict[str, int]) -> dict:
    items = [(area_of(c), str(c.get("property", "?")), (str(c.get("adapter", "?")), str(c.get("device", ""))), c)
             for c in checks]
    return grid(items, order, check_cell)


def record_matrix(recs: list[dict], order: dict[str, int], row_field: str) -> dict:
    """Matrix records of a name no section knows (a new suite's): rows by `row_field` (or the record's test),
    every other field in the hover title."""
    def cell(lst: list[dict]) -> dict:
        failed = [r for r in lst if r.get("passed") is False]
        r = (failed or lst)[0]
        keys = [k for k in r if k not in ("kind", "schema", "_file", "name", "adapter", "device", row_field)]
        return {"failed": bool(failed), "short": "✗" if failed else ("✓" if r.get("passed") is True else "·"),
                "sub": "", "title": "\n".join(f"{k}: {fmt(r.get(k), 80)}" for k in keys)}
    items = [(str(r.get("name", "?")), str(r.get(row_field) or r.get("test") or "?"),
              (str(r.get("adapter", "?")), str(r.get("device", ""))), r) for r in recs]
    return grid(items, order, cell)


def cell_value(v: Any) -> str:
    return fmt(v, SHORT)
