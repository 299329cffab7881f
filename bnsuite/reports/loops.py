"""The training-loops section: per adapter, one row per loop idiom (gradient accumulation, weight averaging) with
what the adapter declares, what was observed, the worst error against the float64 oracle over its bound, and the
measured gap that explains the loop (accumulated vs large-batch step; averaged statistics vs what the model holds).
Reads the "matrix" records named "training_loops" that suites/test_training_loops.py writes."""

from __future__ import annotations

from collections import defaultdict

from bnsuite.reports.order import col_key
from bnsuite.reports.values import fmt

NAME = "training_loops"
_SHOWN = ("adapter", "device", "loop", "idiom", "declared", "observed", "max err / bound", "as declared", "source",
          "kind", "schema", "_file", "name", "test")


def tables(records: list[dict], order: dict[str, int]) -> list[dict]:
    """[{"adapter", "rows": [{"loop", "idiom", "declared", "observed", "error", "measured", "ok", "title"}]}], adapters
    in the report's order, the cpu record first where several devices ran."""
    by_adapter: dict[str, dict[tuple, dict]] = defaultdict(dict)
    for r in sorted(records, key=lambda r: r.get("device") != "cpu"):
        by_adapter[str(r.get("adapter"))].setdefault((str(r.get("loop")), str(r.get("idiom"))), r)
    out = []
    for a in sorted(by_adapter, key=lambda a: col_key(order, (a, ""))):
        rows = []
        for (loop, idiom), r in by_adapter[a].items():
            measured = "; ".join(f"{k}: {fmt(v, 20)}" for k, v in r.items() if k not in _SHOWN)
            rows.append({"loop": loop, "idiom": idiom, "declared": fmt(r.get("declared"), 80),
                         "observed": fmt(r.get("observed"), 80), "error": fmt(r.get("max err / bound"), 60),
                         "measured": measured, "ok": r.get("as declared") is not False,
                         "title": f"source: {fmt(r.get('source'), 400)}"})
        out.append({"adapter": a, "rows": rows})
    return out
