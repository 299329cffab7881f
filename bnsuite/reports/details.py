"""The report's reference sections: failures (each with a runnable reproduction), declarations, tables (grouped),
environment, and what was not measured."""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from typing import Any

from bnsuite.reports.order import col_key
from bnsuite.reports.values import fmt, num, sci


CRASH_LINE = re.compile(r"\S+\.py:\d+: AssertionError")


def failures(checks: list[dict], outcomes: list[dict]) -> list[dict]:
    """One entry per failed/error test, with its failed checks; failed checks without such an outcome also listed."""
    failed_checks: dict[str, list[dict]] = defaultdict(list)
    snippet: dict[str, str] = {}
    script: dict[str, str] = {}
    for c in checks:
        t = str(c.get("test", ""))
        if c.get("snippet"):
            snippet.setdefault(t, str(c["snippet"]))
        if c.get("script"):
            script.setdefault(t, str(c["script"]))
        if c.get("passed") is not True:
            failed_checks[t].append(c)
    entries = []
    for o in outcomes:
        if o.get("outcome") in ("failed", "error"):
            t = str(o.get("test", ""))
            cs = failed_checks.pop(t, [])
            repro = o.get("repro") or next((c["repro"] for c in cs if c.get("repro")), "")
            reason = str(o.get("reason") or "")
            if cs and CRASH_LINE.fullmatch(reason):
                reason = ""  # where the assertion was raised (often contextlib); the failed checks below say why
            entries.append({**o, "reason": reason, "repro": repro, "checks": cs, "snippet": snippet.get(t, ""),
                            "script": script.get(t, "")})
    for t, cs in failed_checks.items():
        entries.append({**cs[0], "outcome": "check failed", "reason": "", "checks": cs, "snippet": snippet.get(t, ""),
                        "script": script.get(t, "")})
    return entries


def flatten_declaration(decl: Any) -> list[tuple[str, str, str]]:
    """(name, value, source) rows from a declaration: {prop: {value, source}} with nested groups (e.g. freeze)."""
    def is_fact(v):
        return isinstance(v, dict) and "value" in v and "source" in v
    rows = []
    for k, v in (decl.items() if isinstance(decl, dict) else []):
        if is_fact(v):
            rows.append((k, fmt(v["value"], 300), str(v["source"])))
        elif isinstance(v, dict) and v and all(is_fact(x) for x in v.values()):
            rows += [(f"{k}.{sub}", fmt(x["value"], 300), str(x["source"])) for sub, x in v.items()]
        elif v not in (None, "", {}, []):
            rows.append((k, fmt(v, 300), ""))
    return rows


def declarations(decls: list[dict], order: dict[str, int]) -> list[dict]:
    seen, out = set(), []
    for d in sorted(decls, key=lambda d: col_key(order, (str(d.get("adapter")), ""))):
        key = json.dumps([d.get("adapter"), d.get("declaration")], sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append({"adapter": d.get("adapter", "?"), "cls": d.get("adapter_class", ""),
                        "unavailable": d.get("unavailable"), "file": d["_file"],
                        "rows": flatten_declaration(d.get("declaration"))})
    return out


SUFFIX = re.compile(r"^(.*?)\s*\(([^()]*)\)\s*$")


def table_groups(recs: list[dict], problems: list[str]) -> list[dict]:
    """Tables, grouped: tables named "<base> (<case>)" with the same columns become ONE table with a first column
    naming the case, instead of one table per adapter."""
    groups: dict[tuple, dict] = {}
    for t in recs:
        if not (isinstance(t.get("rows"), list) and isinstance(t.get("columns", []), list)):
            problems.append(f"{t.get('_file', '')}: table {fmt(t.get('name'))!s} skipped (columns and rows must be "
                            "lists)")
            continue
        name = str(t.get("name", ""))
        m = SUFFIX.match(name)
        base, case = (m.group(1), m.group(2)) if m else (name, "")
        cols = [fmt(c, 60) for c in t.get("columns", [])]
        g = groups.setdefault((base, tuple(cols)), {"name": base, "columns": cols, "rows": [], "cased": False})
        for row in t["rows"]:
            row = row if isinstance(row, list) else [row]
            g["rows"].append((case, row))
            g["cased"] = g["cased"] or bool(case)
    out = []
    for g in groups.values():
        cols = (["case"] if g["cased"] else []) + g["columns"]
        rows = [[{"text": case, "num": False, "first": True}] * g["cased"]
                + [{"text": sci(v) if isinstance(c, float) and (v := num(c)) is not None and not float(c).is_integer()
                    else fmt(c, 80), "num": num(c) is not None, "first": False} for c in row]
                for case, row in g["rows"]]
        out.append({"name": g["name"], "columns": cols, "rows": rows, "n_cases": len({c for c, _ in g["rows"]})})
    return out


def environment(files: list[str], envs: list[dict]) -> list[dict]:
    out = []
    for f in files:
        mine = [e for e in envs if e["_file"] == f]
        runs = [e for e in mine if not e.get("adapter")]
        out.append({"file": f, "runs": [{
            "group": r.get("group", ""), "python": r.get("python", ""), "platform": r.get("platform", ""),
            "started": r.get("started", ""), "argv": " ".join(map(str, r.get("argv") or [])),
            "env": {k: v for k, v in (r.get("env") or {}).items() if v is not None}} for r in runs],
            "adapters": [{"adapter": e.get("adapter"), "versions": fmt(e.get("versions") or {}, 400),
                          "numeric": fmt(e.get("numeric") or {}, 400)} for e in mine if e.get("adapter")]})
    return out


def not_measured(checks: list[dict], outcomes: list[dict], order: dict[str, int]) -> list[dict]:
    """(adapter, device) combinations with outcomes but no checks, with their most common skip reason."""
    measured = {(c.get("adapter"), c.get("device")) for c in checks}
    reasons: dict[tuple, Counter] = defaultdict(Counter)
    for o in outcomes:
        key = (o.get("adapter"), o.get("device"))
        if key not in measured and o.get("adapter"):
            reasons[key][str(o.get("reason") or o.get("outcome", "")).removeprefix("Skipped: ")] += 1
    label = lambda a, d: f"{a} · {d}" if d else str(a)
    return [{"col": label(a, d), "reason": r.most_common(1)[0][0], "n": sum(r.values())}
            for (a, d), r in sorted(reasons.items(), key=lambda kv: col_key(order, (str(kv[0][0]),
                                                                                   str(kv[0][1] or ""))))]


def finite(v: Any) -> bool:
    x = num(v)
    return x is not None and math.isfinite(x)
