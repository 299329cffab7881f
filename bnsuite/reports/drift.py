"""The drift view: every behaviour the suites measured, beside every framework release it ran on.

    python -m bnsuite.reports.drift results/drift-<time> [-o report/drift.html]

Reads only results files: one folder per release set (``<set>/<group>.jsonl`` plus ``set.json`` from the drift
command). Per adapter, one table: a row per behaviour (a check of one test case), a column per release (ordered by the
framework's version), one short value per cell. A cell whose value differs from the release before it is highlighted
and carries the source its declaration cites for that release; a failed check (a change no declared version range
covers) is marked as such. Declared values that differ between releases are listed per adapter with their sources.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import sys
from collections import defaultdict

from bnsuite.reports import results as rs



def _version_key(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.+-]", v or "0")[:4])


def load_sets(run_dir: str) -> dict[str, dict]:
    """set name -> {"info": set.json, "records": [...]}."""
    sets = {}
    for name in sorted(os.listdir(run_dir)):
        folder = os.path.join(run_dir, name)
        if not os.path.isdir(folder):
            continue
        info = {}
        if os.path.exists(os.path.join(folder, "set.json")):
            with open(os.path.join(folder, "set.json"), encoding="utf-8") as fh:
                info = json.load(fh)
        records = _read(folder)
        sets[name] = {"info": info, "records": records}
    return sets


def _read(folder: str) -> list[dict]:
    """Every valid record of the folder's results files; a corrupt line costs only itself."""
    files = [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".jsonl")]
    return rs.read_all(files)[0]


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def cell_value(rec: dict) -> str:
    """One short value per check: the observed fact, or "matches"/"max err" for a numeric comparison."""
    observed = rec.get("observed")
    if rec.get("atol") is not None:  # a numeric comparison against the oracle
        return "matches" if rec.get("passed") else _short(observed)
    return _short(observed)


def behaviours(records: list[dict]) -> dict[str, dict[tuple[str, str], dict]]:
    """adapter -> {(case, property): {"value", "passed", "source", "declared"}} with the case id taken from the test."""
    out: dict[str, dict] = defaultdict(dict)
    for rec in records:
        if rec.get("kind") != "check":
            continue
        test = rec.get("test", "")
        func, _, params = test.rpartition("::")[2].partition("[")
        case = f"{func}[{params}" if params else func
        key = (case, rec.get("property", ""))
        prev = out[rec["adapter"]].get(key)
        value = cell_value(rec)
        if prev is not None and prev["value"] != value:  # several records of one property in one test: keep all
            value = prev["value"] + " | " + value
        out[rec["adapter"]][key] = {"value": value, "passed": rec.get("passed", True) and (prev or {}).get("passed",
                                    True), "source": rec.get("source", ""), "declared": rec.get("declared")}
    return out


def adapter_versions(records: list[dict]) -> dict[str, dict]:
    return {r["adapter"]: r.get("versions", {}) for r in records if r.get("kind") == "env" and r.get("adapter")}


def declarations(records: list[dict]) -> dict[str, dict]:
    return {r["adapter"]: r.get("declaration", {}) for r in records if r.get("kind") == "declaration"}


def main_version(versions: dict) -> str:
    """The release of the adapter's main framework: the first package its versions record names (each framework
    row's versions() lists its own package first); "" where it recorded none."""
    return next(iter(versions.values()), "")


def build(run_dir: str) -> tuple[str, dict]:
    sets = load_sets(run_dir)
    per_adapter: dict[str, list[tuple[str, str, dict, dict, dict]]] = defaultdict(list)
    for name, s in sets.items():
        versions = adapter_versions(s["records"])
        decls = declarations(s["records"])
        for adapter, rows in behaviours(s["records"]).items():
            v = versions.get(adapter, {})
            label = ", ".join(f"{k} {val}" for k, val in v.items()) or name
            per_adapter[adapter].append((name, label, v, rows, decls.get(adapter, {})))
    stats = {"changed": 0, "failed": 0, "behaviours": 0}
    parts = [f"<h1>Behaviour drift across framework releases</h1><p>Results: {html.escape(run_dir)}</p>",
             _sets_table(sets)]
    for adapter in sorted(per_adapter):
        cols = sorted(per_adapter[adapter], key=lambda c: _version_key(main_version(c[2])))
        parts.append(_adapter_section(adapter, cols, stats))
    summary = (f"<p class=summary>{stats['behaviours']} behaviours over {len(sets)} release sets; "
               f"<b>{stats['changed']}</b> changed between releases; <b>{stats['failed']}</b> failed checks "
               f"(a change no declared version range covers).</p>")
    notes = {s["info"].get("torch_note") for s in sets.values() if s["info"].get("torch_note")}
    body = parts[0] + summary + "".join(f"<p class=note>{html.escape(n)}</p>" for n in notes) + "".join(parts[1:])
    return PAGE.replace("{body}", body), stats


def _sets_table(sets: dict) -> str:
    rows = []
    for name, s in sets.items():
        i = s["info"]
        status = html.escape(i.get("error") or "ran")
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(' '.join(i.get('groups', [])))}</td>"
                    f"<td>{i.get('install_s', '')}</td><td>{html.escape(str(i.get('tool', '')))}</td>"
                    f"<td>{i.get('run_s', '')}</td><td>{status}</td></tr>")
    return ("<h2>Release sets</h2><table><tr><th>set</th><th>groups</th><th>install s</th><th>with</th>"
            "<th>run s</th><th>status</th></tr>" + "".join(rows) + "</table>")


def _adapter_section(adapter: str, cols: list, stats: dict) -> str:
    keys = sorted({k for c in cols for k in c[3]})
    head = "".join(f"<th>{html.escape(c[1])}</th>" for c in cols)
    changed_rows, same = [], 0
    for key in keys:
        cells, prev, changed = [], None, False
        for _, _, _, rows, _ in cols:
            b = rows.get(key)
            if b is None:
                cells.append("<td class=absent>-</td>")
                continue
            cls = []
            if prev is not None and b["value"] != prev:
                cls.append("changed")
                changed = True
            if not b["passed"]:
                cls.append("failed")
                stats["failed"] += 1
            title = html.escape(f"declared {b['declared']!r}; source: {b['source']}" if b["source"] else "")
            cells.append(f"<td class='{' '.join(cls)}' title='{title}'>{html.escape(b['value'])}"
                         + (f"<div class=src>{html.escape(b['source'])}</div>" if "changed" in cls and b["source"]
                            else "") + "</td>")
            prev = b["value"]
        stats["behaviours"] += 1
        if changed or any("failed" in c for c in cells):
            stats["changed"] += changed
            changed_rows.append(f"<tr><th>{html.escape(key[1])}<div class=case>{html.escape(key[0])}</div></th>"
                                + "".join(cells) + "</tr>")
        else:
            same += 1
    decl_rows = _declaration_diff(cols)
    return (f"<h2>{html.escape(adapter)}</h2><p>{len(changed_rows)} behaviours changed or failed; {same} the same on "
            f"every release.</p>"
            + (f"<table class=drift><tr><th>behaviour</th>{head}</tr>{''.join(changed_rows)}</table>"
               if changed_rows else "")
            + decl_rows)


def _declaration_diff(cols: list) -> str:
    fields = sorted({f for c in cols for f in c[4]})
    rows = []
    for f in fields:
        vals = [c[4].get(f) for c in cols]
        if all(json.dumps(v, sort_keys=True, default=str) == json.dumps(vals[0], sort_keys=True, default=str)
               for v in vals):
            continue
        cells = "".join(f"<td>{html.escape(_short(v.get('value') if isinstance(v, dict) else v))}"
                        f"<div class=src>{html.escape(str(v.get('source', '')) if isinstance(v, dict) else '')}"
                        "</div></td>" for v in vals)
        rows.append(f"<tr><th>{html.escape(f)}</th>{cells}</tr>")
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c[1])}</th>" for c in cols)
    return f"<h3>Declared values that differ by release</h3><table><tr><th>field</th>{head}</tr>{''.join(rows)}</table>"


PAGE = """<!doctype html><html><head><meta charset=utf-8><title>bnsuite: drift across releases</title><style>
body{font:14px system-ui,sans-serif;margin:1.5em;max-width:1900px}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left}th{background:#f4f4f4}
td.changed{background:#fff3b0}td.failed{background:#f8c9c4}td.absent{color:#999}.src,.case{font-size:11px;color:#555}
.summary{font-size:16px}.note{color:#555}</style></head><body>{body}</body></html>"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bnsuite.reports.drift", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", help="a drift results folder (one sub-folder per release set)")
    ap.add_argument("-o", "--out", default=os.path.join("report", "drift.html"))
    a = ap.parse_args(argv)
    if not os.path.isdir(a.run_dir):
        print(f"bnsuite drift: error: {a.run_dir!r} is not a folder of drift results", file=sys.stderr)
        return 2
    page, stats = build(a.run_dir)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)) or ".", exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as fh:
        fh.write(page)
    print(f"bnsuite drift: {stats['changed']} behaviours changed, {stats['failed']} failed checks; "
          f"view: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
