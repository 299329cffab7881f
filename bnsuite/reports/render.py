"""Render results files into ONE self-contained HTML page (Jinja2 template, autoescaped, no external resources).

    python -m bnsuite.reports.render RESULTS... [-o report/index.html] [--compare OLD_RESULTS...]

RESULTS may be files or directories (all *.jsonl inside). Exit status: 0 report written from clean input;
1 report written, but some input was unreadable (one stderr line per problem); 2 nothing written.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import math
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import jinja2

from bnsuite.reports.results import read_all

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
DEVICE_ORDER = {"cpu": 0, "gpu": 1}
OPTIONAL = ("freeze matrix", "batch-size curves", "cross-framework heat map", "naive-port table")
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


@dataclass
class RenderSummary:
    out: str | None  # the report written, None when nothing was
    files: list[str]
    records: int
    problems: list[str] = field(default_factory=list)  # one line each: corrupt lines, unreadable files
    outcomes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 2 if self.out is None else (1 if self.problems else 0)


# ---- small value helpers -------------------------------------------------------------------------------------------

def fmt(v: Any, limit: int = 160) -> str:
    """One short display string for any JSON value."""
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


def tests_title(tests: list[str], limit: int = 8) -> str:
    shown = list(dict.fromkeys(tests))
    more = len(shown) - limit
    return "\n".join(["tests:"] + [f"  {t}" for t in shown[:limit]] + ([f"  … and {more} more"] if more > 0 else []))


# The built-in adapter ids in the order users meet them (reports never import bnsuite.adapters/; unknown ids go last).
ADAPTER_ORDER = {a: i for i, a in enumerate(["torch", "keras-tensorflow", "keras-jax", "keras-torch", "tf_keras",
                                             "tf1-keras", "tf1-graph", "flax-linen", "flax-nnx"])}
# Matrix rows: the semantics people port and debug first, then the deeper suites.
MODULE_ORDER = {m: i for i, m in enumerate([
    "test_defaults", "test_running_stats", "test_equal_stats_paradox", "test_training_mode", "test_inference_mode",
    "test_single_value_batch", "test_batch_stats_inference", "test_freeze", "test_finetune",
    "test_tf1_vs_tf2_trainable", "test_framework_traps", "test_batch_size", "test_deep_batch_size", "test_porting",
    "test_network_equivalence", "test_gradients", "test_precision", "test_hard_inputs"])}


def col_key(ad: tuple[str, str]) -> tuple:
    return ADAPTER_ORDER.get(ad[0], len(ADAPTER_ORDER)), ad[0], DEVICE_ORDER.get(ad[1], 9), ad[1]


def row_key(rec: dict) -> int:
    module = str(rec.get("test", "")).split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
    return MODULE_ORDER.get(module, len(MODULE_ORDER))


def col_label(ad: tuple[str, str]) -> str:
    return f"{ad[0]} / {ad[1]}" if ad[1] else ad[0]


# ---- sections ------------------------------------------------------------------------------------------------------

def grid(items: list[tuple[str, tuple[str, str], dict]], cell) -> dict:
    """Rows x (adapter, device) columns from (row, column, record) triples; `cell` summarizes one cell's records.

    A row whose declared values differ (between adapters, or code paths) is a known divergence: its passing
    cells are shaded as such, so a stranger tells "frameworks differ by design" from "framework broke its contract".
    """
    first: dict[str, tuple[int, int]] = {}
    for i, (r, _, rec) in enumerate(items):
        first.setdefault(r, (row_key(rec), i))
    rows = sorted(first, key=first.get)
    cols = sorted({c for _, c, _ in items}, key=col_key)
    by_cell: dict[tuple, list[dict]] = defaultdict(list)
    for r, c, rec in items:
        by_cell[(r, c)].append(rec)
    out_rows = []
    for r in rows:
        recs = [rec for (rr, _), lst in by_cell.items() if rr == r for rec in lst]
        diverges = len({fmt(rec.get("declared")) for rec in recs}) > 1
        cells = []
        for c in cols:
            lst = by_cell.get((r, c))
            if not lst:
                cells.append({"state": "absent", "lines": ["—"], "title": "not measured", "err": ""})
                continue
            d = cell(lst)
            d["state"] = "fail" if d["failed"] else ("diverge" if diverges else "pass")
            decl = ", ".join(dict.fromkeys(fmt(x.get("declared"), 40) for x in lst))
            # the declared value is worth a line only in a divergent row, and only when the observation doesn't say it
            d["decl"] = decl if d["state"] == "diverge" and decl != ", ".join(d["lines"]) else ""
            cells.append(d)
        out_rows.append({"name": r, "cells": cells, "diverges": diverges})
    return {"cols": [col_label(c) for c in cols], "rows": out_rows}


def check_cell(checks: list[dict]) -> dict:
    failed = [c for c in checks if c.get("passed") is not True]
    shown = failed or checks  # a failing cell shows what went wrong first
    values = list(dict.fromkeys(fmt(c.get("observed"), 48) for c in shown))
    lines = values[:2] + ([f"+{len(values) - 2} more"] if len(values) > 2 else [])
    err = worst([e for c in checks if (e := num(c.get("max_abs_err"))) is not None])
    declared = list(dict.fromkeys(fmt(c.get("declared")) for c in checks))
    sources = list(dict.fromkeys(str(c.get("source") or "") for c in checks if c.get("source")))
    dtypes = list(dict.fromkeys(str(c.get("dtype", "")) for c in checks))
    title = "\n".join(
        [f"declared: {' | '.join(declared)}", f"observed: {' | '.join(values)}",
         f"checks: {len(checks)} ({len(failed)} failed), dtypes: {', '.join(dtypes)}"]
        + ([f"worst max abs err: {sci(err)}"] if err is not None else [])
        + [f"source: {s}" for s in sources] + [tests_title([str(c.get("test", "")) for c in checks])])
    return {"failed": bool(failed), "lines": lines, "err": f"max err {sci(err)}" if err is not None else "",
            "title": title}


def freeze_cell(recs: list[dict]) -> dict:
    def upd(v: Any) -> str:
        return {True: "update", False: "frozen"}.get(v, fmt(v, 24)) if not isinstance(v, str) else v
    r = next((x for x in recs if x.get("passed") is not True), recs[0])
    lines = [f"normalizes: {fmt(r.get('normalizes_with'), 24)}", f"running stats: {upd(r.get('running_stats_update'))}",
             f"γ/β: {upd(r.get('params_update'))}"] + ([f"error: {fmt(r['error'], 40)}"] if r.get("error") else [])
    title = "\n".join([f"declared: {fmt(r.get('declared'))}",
                       f"observed: {'; '.join(lines)}"]
                      + ([f"source: {r['source']}"] if r.get("source") else []) + [tests_title([str(x.get("test", "")) for x in recs])])
    return {"failed": any(x.get("passed") is not True for x in recs), "lines": lines, "err": "", "title": title}


def failures(checks: list[dict], outcomes: list[dict]) -> list[dict]:
    """One entry per failed/error test, with its failed checks; failed checks without such an outcome also listed."""
    failed_checks: dict[str, list[dict]] = defaultdict(list)
    snippet: dict[str, str] = {}
    for c in checks:
        t = str(c.get("test", ""))
        if c.get("snippet"):
            snippet.setdefault(t, str(c["snippet"]))
        if c.get("passed") is not True:
            failed_checks[t].append(c)
    entries = []
    for o in outcomes:
        if o.get("outcome") in ("failed", "error"):
            t = str(o.get("test", ""))
            cs = failed_checks.pop(t, [])
            repro = o.get("repro") or next((c["repro"] for c in cs if c.get("repro")), "")
            entries.append({**o, "repro": repro, "checks": cs, "snippet": snippet.get(t, "")})
    for t, cs in failed_checks.items():
        entries.append({**cs[0], "outcome": "check failed", "reason": "", "checks": cs, "snippet": snippet.get(t, "")})
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


def declarations(decls: list[dict]) -> list[dict]:
    seen, out = set(), []
    for d in decls:
        key = json.dumps([d.get("adapter"), d.get("declaration")], sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append({"adapter": d.get("adapter", "?"), "cls": d.get("adapter_class", ""),
                        "unavailable": d.get("unavailable"), "file": d["_file"],
                        "rows": flatten_declaration(d.get("declaration"))})
    return out


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    step *= next(m for m in (1, 2, 5, 10) if (hi - lo) / (step * m) <= n)
    return [i * step for i in range(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 1)]


def svg_plot(name: str, recs: list[dict]) -> dict:
    """Line plot geometry (log x; log y when y spans >= 2 decades) computed here; the template only draws it."""
    W, H, L, R, T, B = 720, 330, 72, 190, 16, 48
    series = []
    for rec in recs:
        pts = [(float(x), float(y)) for x, y in zip(rec["x"], rec["y"])
               if num(x) is not None and num(y) is not None and math.isfinite(float(x)) and math.isfinite(float(y))
               and float(x) > 0]
        series.append((rec, pts))
    xs = [x for _, p in series for x, _ in p]
    ys = [y for _, p in series for _, y in p]
    if not xs:
        return {"name": name, "empty": True}
    logy = min(ys) > 0 and max(ys) / min(ys) >= 100
    fy = math.log10 if logy else float
    x0, x1 = math.log10(min(xs)), math.log10(max(xs))
    y0, y1 = fy(min(ys)), fy(max(ys))
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 == y0:
        y0, y1 = y0 - (abs(y0) or 1) * 0.1, y1 + (abs(y1) or 1) * 0.1
    if not logy and y0 > 0 and y0 < 0.5 * y1:
        y0 = 0.0  # linear axes read best from zero
    px = lambda x: L + (math.log10(x) - x0) / (x1 - x0) * (W - L - R)
    py = lambda y: T + (1 - (fy(y) - y0) / (y1 - y0)) * (H - T - B)
    distinct = sorted(set(xs))
    xt = distinct if len(distinct) <= 12 else [10.0 ** k for k in range(math.ceil(x0), math.floor(x1) + 1)]
    yt = ([10.0 ** k for k in range(math.ceil(y0), math.floor(y1) + 1)] if logy else nice_ticks(y0, y1))
    vary = lambda f: len({str(r.get(f)) for r in recs}) > 1
    lines = []
    for i, (rec, pts) in enumerate(series):
        label = " / ".join(str(rec.get(f, "")) for f in ("adapter", "device", "dtype") if f == "adapter" or vary(f))
        lines.append({"label": label, "color": PALETTE[i % len(PALETTE)],
                      "points": " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts),
                      "dots": [(round(px(x), 1), round(py(y), 1), f"{label}: x={x:g}, y={y:.3g}") for x, y in pts]})
    return {"name": name, "empty": False, "W": W, "H": H, "L": L, "R": R, "T": T, "B": B,
            "xlabel": str(recs[0].get("xlabel", "x")), "ylabel": str(recs[0].get("ylabel", "y")) + (" (log)" if logy else ""),
            "xticks": [(round(px(x), 1), f"{x:g}") for x in xt],
            "yticks": [(round(py(y), 1), f"{y:.3g}") for y in yt], "lines": lines}


def table_view(rec: dict, heat: bool) -> dict:
    """A table; a heat map colours its numeric cells from pale (small) to dark red (large), log-scaled if wide."""
    rows = [[c for c in row] if isinstance(row, list) else [row] for row in rec.get("rows", [])]
    vals = [v for row in rows for c in row if (v := num(c)) is not None and math.isfinite(v)]
    logscale = bool(vals) and min(vals) > 0 and max(vals) / min(vals) >= 100
    f = math.log10 if logscale else float
    lo, hi = (f(min(vals)), f(max(vals))) if vals else (0.0, 1.0)
    out = []
    for row in rows:
        cells = []
        for c in row:
            v, style = num(c), ""
            if heat and v is not None:
                if not math.isfinite(v):
                    style = "background:#5a0000;color:#fff"
                else:
                    t = 0.0 if hi == lo else (f(v) - lo) / (hi - lo)
                    rgb = [round(a + (b - a) * t) for a, b in zip((255, 245, 225), (175, 20, 20))]
                    style = f"background:rgb({rgb[0]},{rgb[1]},{rgb[2]});color:{'#fff' if t > 0.55 else '#111'}"
            cells.append({"text": sci(v) if heat and v is not None and isinstance(c, float) else fmt(c, 80),
                          "style": style, "num": v is not None})
        out.append(cells)
    scale = (f"colour scale: {sci(min(vals))} (pale) → {sci(max(vals))} (dark){', log' if logscale else ''}"
             if heat and vals else "")
    return {"name": str(rec.get("name", "")), "columns": [fmt(c, 60) for c in rec.get("columns", [])],
            "rows": out, "heat": heat, "scale": scale, "file": rec.get("_file", "")}


def observed_map(checks: list[dict]) -> dict[tuple, tuple[str, bool]]:
    """(property, adapter, device, dtype) -> (distinct observed values, all passed), for drift."""
    acc: dict[tuple, list[dict]] = defaultdict(list)
    for c in checks:
        acc[tuple(str(c.get(k, "")) for k in ("property", "adapter", "device", "dtype"))].append(c)
    return {k: (" | ".join(sorted({fmt(c.get("observed"), 80) for c in cs})), all(c.get("passed") is True for c in cs))
            for k, cs in acc.items()}


def drift(new_checks: list[dict], old_checks: list[dict]) -> dict:
    new, old = observed_map(new_checks), observed_map(old_checks)
    changed = [{"key": k, "old": old[k][0], "new": new[k][0], "old_ok": old[k][1], "new_ok": new[k][1]}
               for k in sorted(new.keys() & old.keys()) if old[k] != new[k]]
    return {"changed": changed, "only_old": sorted(old.keys() - new.keys()), "only_new": sorted(new.keys() - old.keys()),
            "compared": len(new.keys() & old.keys())}


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


def not_measured(checks: list[dict], outcomes: list[dict]) -> list[dict]:
    """(adapter, device) combinations with outcomes but no checks, with their most common skip reason."""
    measured = {(c.get("adapter"), c.get("device")) for c in checks}
    reasons: dict[tuple, Counter] = defaultdict(Counter)
    for o in outcomes:
        key = (o.get("adapter"), o.get("device"))
        if key not in measured and o.get("adapter"):
            reasons[key][str(o.get("reason") or o.get("outcome", "")).removeprefix("Skipped: ")] += 1
    return [{"col": col_label((str(a), str(d or ""))), "reason": r.most_common(1)[0][0], "n": sum(r.values())}
            for (a, d), r in sorted(reasons.items(), key=lambda kv: col_key((str(kv[0][0]), str(kv[0][1] or ""))))]


# ---- entry points --------------------------------------------------------------------------------------------------

def expand(paths: list[str]) -> tuple[list[str], list[str]]:
    """Files from files and directories (all *.jsonl inside); one problem line per empty directory."""
    files, problems = [], []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(glob.glob(os.path.join(p, "**", "*.jsonl"), recursive=True))  # CI artifacts nest
            files += found
            if not found:
                problems.append(f"{p}: directory has no *.jsonl results files")
        else:
            files.append(p)
    return files, problems


def context(records: list[dict], files: list[str], old: list[dict] | None, problems: list[str]) -> dict:
    kinds: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        kinds[r["kind"]].append(r)
    checks, outcomes = kinds["check"], kinds["outcome"]
    col = lambda r: (str(r.get("adapter", "?")), str(r.get("device", "")))
    matrices = [m for m in kinds["matrix"] if m.get("name") == "freeze"]
    other_matrices = [m for m in kinds["matrix"] if m.get("name") not in ("freeze", "port")]
    kinds["table"] = kinds["table"] + port_grids([m for m in kinds["matrix"] if m.get("name") == "port"])
    curves: dict[str, list[dict]] = defaultdict(list)
    for c in kinds["curve"]:
        if isinstance(c.get("x"), list) and isinstance(c.get("y"), list) and len(c["x"]) == len(c["y"]):
            curves[str(c.get("name", "curve"))].append(c)
        else:
            problems.append(f"{c['_file']}: curve {fmt(c.get('name'))!s} skipped (x and y must be lists of equal length)")
    tables = []
    for t in kinds["table"] + [{"name": f"matrix {m}", "_file": "", **generic} for m, generic in
                               generic_matrices(other_matrices).items()]:
        if isinstance(t.get("rows"), list) and isinstance(t.get("columns", []), list):
            tables.append(table_view(t, heat="heatmap" in str(t.get("name", ""))))
        else:
            problems.append(f"{t['_file']}: table {fmt(t.get('name'))!s} skipped (columns and rows must be lists)")
    present = {"freeze matrix": bool(matrices), "batch-size curves": bool(curves),
               "cross-framework heat map": any(t["name"] == "crossfw_heatmap" for t in tables),
               "naive-port table": any("naive" in t["name"] for t in tables)}
    starts = sorted(str(e["started"])[:19].replace("T", " ") for e in kinds["env"] if e.get("started"))
    return {
        "generated": datetime.datetime.now().isoformat(timespec="seconds"),
        "runs_started": (starts[0], starts[-1]) if starts else None,
        "files": files, "n_records": len(records), "problems": problems,
        "counts": Counter(str(o.get("outcome", "?")) for o in outcomes),
        "n_checks": len(checks), "n_failed_checks": sum(c.get("passed") is not True for c in checks),
        "matrix": grid([(str(c.get("property", "?")), col(c), c) for c in checks], check_cell),
        "not_measured": not_measured(checks, outcomes),
        "failures": failures(checks, outcomes),
        "declarations": declarations(kinds["declaration"]),
        "freeze": grid([(str(m.get("idiom", "?")), col(m), m) for m in matrices], freeze_cell) if matrices else None,
        "curves": [svg_plot(n, cs) for n, cs in curves.items()],
        "tables": tables,
        "absent": [s for s in OPTIONAL if not present[s]],
        "environment": environment(files, kinds["env"]),
        "drift": drift(checks, [r for r in old if r["kind"] == "check"]) if old is not None else None,
    }


def port_grids(recs: list[dict]) -> list[dict]:
    """Porting pairs (matrix records named "port") as source x target grids: the worst difference after a correct
    port (the cross-framework heat map) and after a naive one (copy the vectors, keep the target's defaults)."""
    if not recs:
        return []
    sources = list(dict.fromkeys(str(r.get("source")) for r in recs))
    targets = list(dict.fromkeys(f"{r.get('target')} / {r.get('device')} / {r.get('dtype')}" for r in recs))
    grids = []
    for name, key, what in (
            ("crossfw_heatmap", "correct_port_max_abs", "max abs difference from the source after a correct port "
                                                       "(outputs and running stats over 20 steps)"),
            ("naive_port_inference_heatmap", "naive_inference_max_abs", "max abs inference-output error of a naive port"),
            ("naive_port_running_var_heatmap", "naive_running_var_k5_max_rel",
             "max relative running-variance error of a naive port after 5 steps")):
        cell = {(str(r.get("source")), f"{r.get('target')} / {r.get('device')} / {r.get('dtype')}"): r.get(key)
                for r in recs}
        rows = [[f"from {s}"] + [cell.get((s, t), "") for t in targets] for s in sources]
        grids.append({"name": name, "columns": [what] + [f"to {t}" for t in targets], "rows": rows, "_file": ""})
    return grids


def generic_matrices(recs: list[dict]) -> dict[str, dict]:
    """Matrix records of names the report has no special view for, as plain tables."""
    by: dict[str, list[dict]] = defaultdict(list)
    for r in recs:
        by[str(r.get("name", "?"))].append(r)
    out = {}
    for name, rs in by.items():
        cols = list(dict.fromkeys(k for r in rs for k in r if k not in ("kind", "schema", "_file", "name")))
        out[name] = {"columns": cols, "rows": [[r.get(k) for k in cols] for r in rs]}
    return out


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    env.filters["sci"] = lambda v: sci(num(v))
    return env


def render(paths: list[str], out: str, compare: list[str] | None = None) -> RenderSummary:
    """Merge results files into one HTML report at `out`; never drops valid records because of corrupt ones."""
    t0 = time.perf_counter()
    files, problems = expand(paths)
    records, errors = read_all(files)
    problems += errors
    old = None
    if compare is not None:
        old_files, p = expand(compare)
        old, errors = read_all(old_files)
        problems += p + errors
    summary = RenderSummary(out=None, files=files, records=len(records), problems=problems)
    if not records:
        return summary
    ctx = context(records, files, old, problems)
    html = _env().get_template("report.html.j2").render(**ctx)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(html)
    os.replace(tmp, out)  # a reader never sees half a report
    summary.out, summary.outcomes = out, dict(ctx["counts"])
    summary.seconds = time.perf_counter() - t0
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bnsuite.reports.render", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="results files (JSON lines) or directories of *.jsonl")
    ap.add_argument("-o", "--out", default=os.path.join("report", "index.html"), help="HTML file to write")
    ap.add_argument("--compare", nargs="+", metavar="OLD", help="older results to list drift against")
    args = ap.parse_args(argv)
    try:
        s = render(args.results, args.out, args.compare)
    except Exception as e:  # one line, never a bare traceback
        print(f"render: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    for p in s.problems:
        print(p, file=sys.stderr)
    if s.out is None:
        print(f"render: no valid results records in {', '.join(args.results)}; no report written", file=sys.stderr)
        return 2
    counts = ", ".join(f"{n} {k}" for k, n in sorted(s.outcomes.items())) or "no test outcomes"
    print(f"report written: {s.out} ({s.records} records from {len(s.files)} files; {counts}; {s.seconds:.2f}s)")
    return s.exit_code


if __name__ == "__main__":
    sys.exit(main())
