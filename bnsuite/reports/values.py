"""Display helpers for JSON values from results files: one short string per value, numbers from the writer's
'nan'/'inf' strings, worst errors. Pure functions, no knowledge of record kinds."""

from __future__ import annotations

import json
import math
from typing import Any


def fmt(v: Any, limit: int = 160) -> str:
    """One display string for any JSON value, cut at `limit` characters."""
    if v is None:
        s = "none"
    elif isinstance(v, bool):
        s = "true" if v else "false"
    elif isinstance(v, float):
        s = f"{v:.6g}"
    elif isinstance(v, str):
        s = v
    else:
        s = json.dumps(v, sort_keys=True)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def num(v: Any) -> float | None:
    """A float from a number or from the 'nan'/'inf' strings the writer stores; None otherwise."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and v.strip().lower() in ("nan", "inf", "-inf"):
        return float(v)
    return None


def sci(x: float | None) -> str:
    return "" if x is None else f"{x:.2g}"


def worst(values: list[float]) -> float | None:
    """Largest error; NaN counts as the worst."""
    if not values:
        return None
    return math.nan if any(math.isnan(v) for v in values) else max(values)
