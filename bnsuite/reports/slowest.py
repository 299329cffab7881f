"""The report's "slowest cases" section: per group (one results file each), its measured time and the cases that
took longest, so that the next speed regression names itself.

A case's time is its set-up plus its call (`seconds` of its outcome record; a module-scoped fixture's set-up counts
on the first case that needs it). Records without `seconds` (older results files) are left out.
"""

from __future__ import annotations

import os
from collections import defaultdict

from bnsuite.reports.values import num

TOP = 5  # cases listed per group


def slowest(outcomes: list[dict], envs: list[dict], top: int = TOP) -> list[dict]:
    """[{group, seconds, cases, slowest: [{test, adapter, outcome, seconds}]}], the slowest group first."""
    group_of = {e["_file"]: str(e.get("group") or "") for e in envs if not e.get("adapter") and e.get("group")}
    timed: dict[str, list[dict]] = defaultdict(list)
    for o in outcomes:
        s = num(o.get("seconds"))
        if s is None:
            continue
        f = o.get("_file", "")
        group = group_of.get(f) or os.path.basename(str(f)).removesuffix(".jsonl")
        timed[group].append({"test": str(o.get("test", "")), "adapter": str(o.get("adapter") or ""),
                             "outcome": str(o.get("outcome", "")), "seconds": float(s)})
    out = []
    for group, cases in timed.items():
        cases.sort(key=lambda c: -c["seconds"])
        out.append({"group": group, "seconds": sum(c["seconds"] for c in cases), "cases": len(cases),
                    "slowest": cases[:top]})
    return sorted(out, key=lambda g: -g["seconds"])
