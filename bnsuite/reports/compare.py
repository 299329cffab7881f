"""Drift against an older run (--compare): which measured observations changed, per (property, adapter, device,
dtype), and which findings appeared or disappeared."""

from __future__ import annotations

from collections import defaultdict

from bnsuite.reports.values import fmt


def observed_map(checks: list[dict]) -> dict[tuple, tuple[str, bool]]:
    """(property, adapter, device, dtype) -> (distinct observed values, all passed)."""
    acc: dict[tuple, list[dict]] = defaultdict(list)
    for c in checks:
        acc[tuple(str(c.get(k, "")) for k in ("property", "adapter", "device", "dtype"))].append(c)
    return {k: (" | ".join(sorted({fmt(c.get("observed"), 80) for c in cs})), all(c.get("passed") is True for c in cs))
            for k, cs in acc.items()}


def drift(new: list[dict], old: list[dict]) -> dict:
    """`new` and `old` are whole record lists."""
    new_checks = [r for r in new if r.get("kind") == "check"]
    old_checks = [r for r in old if r.get("kind") == "check"]
    n, o = observed_map(new_checks), observed_map(old_checks)
    changed = [{"key": k, "old": o[k][0], "new": n[k][0], "old_ok": o[k][1], "new_ok": n[k][1]}
               for k in sorted(n.keys() & o.keys()) if o[k] != n[k]]
    names = lambda recs: {str(r.get("name")) for r in recs if r.get("kind") == "finding"}
    return {"changed": changed, "only_old": sorted(o.keys() - n.keys()), "only_new": sorted(n.keys() - o.keys()),
            "compared": len(n.keys() & o.keys()),
            "findings_added": sorted(names(new) - names(old)), "findings_removed": sorted(names(old) - names(new)),
            "newly_failing": sum(1 for c in changed if c["old_ok"] and not c["new_ok"]),
            "newly_passing": sum(1 for c in changed if not c["old_ok"] and c["new_ok"])}
