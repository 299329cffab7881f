"""Column order and row grouping, taken from the results themselves (never from a list of test modules or ids):

* adapters: the `position` each declaration record carries (registry order for built-in adapters), else the order in
  which the results file that declares the most adapters lists them, else first appearance;
* rows: the `area` field the writer puts on check records (the test module's name), else the area derived from the
  test id; within an area, properties in the order they were first measured.
"""

from __future__ import annotations

DEVICE_ORDER = {"cpu": 0, "gpu": 1}


def adapter_order(declarations: list[dict], records: list[dict]) -> dict[str, int]:
    """adapter id -> rank."""
    per_file: dict[str, list[str]] = {}
    for d in declarations:
        per_file.setdefault(str(d.get("_file", "")), []).append(str(d.get("adapter")))
    widest = max(per_file.values(), key=len, default=[])
    position = {str(d.get("adapter")): d["position"] for d in declarations if isinstance(d.get("position"), int)}
    seen: dict[str, int] = {}
    for r in declarations + records:
        a = r.get("adapter")
        if a and str(a) not in seen:
            seen[str(a)] = len(seen)
    key = lambda a: (position.get(a, 10 ** 6), widest.index(a) if a in widest else 10 ** 6, seen[a])
    return {a: i for i, a in enumerate(sorted(seen, key=key))}


def area_of(rec: dict) -> str:
    """The record's semantic area: the writer's `area` field, else the test module's name without test_."""
    if rec.get("area"):
        return str(rec["area"])
    module = str(rec.get("test", "")).split("::")[0].rsplit("/", 1)[-1]
    return module.removesuffix(".py").removeprefix("test_") or "other"


def col_key(order: dict[str, int], col: tuple[str, str]) -> tuple:
    return order.get(col[0], len(order)), col[0], DEVICE_ORDER.get(col[1], 9), col[1]
