"""The report's front page: the answers its readers come for, each from today's records.

* findings: what the suite found (records of kind "finding"): kind, severity, upstream status with the search behind
  it, this run's status of the checks demonstrating each, the framework versions measured now and the reproduction;
* porting guide: for every ordered pair of adapters (matrix records named "port"), how eps, momentum, the channel
  axis and the running-variance estimator convert, and the measured cost of a naive port;
* freeze cheat sheet: per adapter, each freezing idiom (matrix records named "freeze"): batch or running statistics,
  do the statistics move, do the parameters move;
* batch-size answers: every curve over the batch size, with a one-line reading.
"""

from __future__ import annotations

import os
from collections import defaultdict

from bnsuite.reports.order import col_key
from bnsuite.reports.values import fmt, num, sci

SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2}
KIND_ORDER = {"bug": 0, "documented-divergence": 1, "convention": 2}


def _demonstrates(f: dict, c: dict) -> bool:
    where = f.get("where") or []
    return (c.get("property") in (f.get("properties") or []) and c.get("adapter") in (f.get("adapters") or [])
            and (not where or any(w in str(c.get("test", "")) for w in where)))


def findings_list(finding_recs: list[dict], checks: list[dict], envs: list[dict], repo_rel: str) -> list[dict]:
    """One entry per declared finding (deduplicated by name, declaration order kept), severity first."""
    uniq: dict[str, dict] = {}
    for f in finding_recs:
        uniq.setdefault(str(f.get("name")), f)
    versions: dict[str, str] = {}
    for e in envs:
        if e.get("adapter") and isinstance(e.get("versions"), dict) and e["versions"]:
            versions[str(e["adapter"])] = ", ".join(f"{k} {v}" for k, v in sorted(e["versions"].items()))
    by_prop = defaultdict(list)
    for c in checks:
        by_prop[c.get("property")].append(c)
    out = []
    for f in uniq.values():
        mine = [c for p in (f.get("properties") or []) for c in by_prop.get(p, []) if _demonstrates(f, c)]
        failed = [c for c in mine if c.get("passed") is not True]
        if not mine:
            run_status, run_state = "not measured in these results", "absent"
        elif failed:
            run_status, run_state = (f"{len(failed)} of {len(mine)} demonstrating checks FAILED: the framework may "
                                     "have changed; run the reproduction", "fail")
        else:
            run_status, run_state = f"reproduced in this run ({len(mine)} checks as declared)", "pass"
        now = sorted({versions[a] for a in f.get("adapters") or [] if a in versions})
        repro = str(f.get("reproduction") or f"findings/{f.get('name')}.py")
        draft = f.get("upstream_report")
        # Older results files carry no status and no evidence: the upstream reference alone.
        evidence = str(f.get("status_text") or f.get("upstream") or "not reported upstream")
        out.append({**f, "run_status": run_status, "run_state": run_state, "measured_versions": now,
                    "finding_kind": str(f.get("finding_kind") or "unclassified"),
                    "upstream_status": str(f.get("status") or ("reported" if f.get("upstream") else "not-reported")),
                    "evidence": evidence, "repro": repro, **{k: str(f.get(k) or "") for k in
                                                              ("documentation", "fixed_by", "fixed_in")},
                    "repro_href": os.path.join(repo_rel, repro).replace(os.sep, "/"),
                    "draft_href": os.path.join(repo_rel, draft).replace(os.sep, "/") if draft else ""})
    out.sort(key=lambda f: (SEVERITY_ORDER.get(str(f.get("severity")), 9), KIND_ORDER.get(f["finding_kind"], 9)))
    return out


def findings_by_adapter(findings: list[dict], order: dict[str, int]) -> list[tuple[str, list[tuple[int, str]]]]:
    """For a reader who maintains one framework: each adapter with the findings (list number, name) that name it."""
    adapters = sorted({str(a) for f in findings for a in f.get("adapters") or []},
                      key=lambda a: (order.get(a, len(order)), a))
    return [(a, [(i, str(f.get("name"))) for i, f in enumerate(findings, 1) if a in (f.get("adapters") or [])])
            for a in adapters]


def weight_layouts(recs: list[dict], order: dict[str, int]) -> list[dict]:
    """The network suite's kernel layouts, one row per adapter: what a porting user transposes besides BatchNorm."""
    rows: dict[str, dict] = {}
    for r in recs:
        layout = r.get("layout") if isinstance(r.get("layout"), dict) else {}
        rows.setdefault(str(r.get("adapter")), {"adapter": str(r.get("adapter")), "source": str(r.get("source", "")),
                                                "conv": fmt(layout.get("conv kernel", "")),
                                                "dense": fmt(layout.get("dense kernel", "")),
                                                "checked": r.get("checked")})
    return sorted(rows.values(), key=lambda r: (order.get(r["adapter"], len(order)), r["adapter"]))


def _decl_value(decls: dict[str, dict], adapter: str, field: str):
    d = decls.get(adapter, {}).get(field)
    return d.get("value") if isinstance(d, dict) else None


def porting_guide(ports: list[dict], declarations: list[dict], order: dict[str, int]) -> dict | None:
    """Every ordered pair measured: what to set on the target, and what forgetting it cost (the naive port)."""
    if not ports:
        return None
    decls = {str(d.get("adapter")): d.get("declaration") or {} for d in declarations}
    pairs: dict[tuple[str, str], dict] = {}
    for r in sorted(ports, key=lambda r: (r.get("device") != "cpu", r.get("dtype") != "float32")):
        pairs.setdefault((str(r.get("source")), str(r.get("target"))), r)  # cpu float32 first
    sources = sorted({s for s, _ in pairs}, key=lambda a: col_key(order, (a, "")))
    targets = sorted({t for _, t in pairs}, key=lambda a: col_key(order, (a, "")))
    groups = []
    for s in sources:
        rows = []
        for t in targets:
            r = pairs.get((s, t))
            if r is None or s == t:
                continue
            eps_s, eps_t = r.get("source_eps"), r.get("target_default_eps")
            mom_t, mom_d = r.get("target_momentum"), r.get("target_default_momentum")
            last_s, last_t = _decl_value(decls, s, "default_channels_last"), _decl_value(decls, t, "default_channels_last")
            est_s, est_t = r.get("source_estimator"), r.get("target_estimator")
            axis = ("same layout" if last_s == last_t or None in (last_s, last_t) else
                    "transpose inputs (N,C,…)→(N,…,C)" if last_t else "transpose inputs (N,…,C)→(N,C,…) or axis=-1")
            rows.append({
                "target": t,
                "eps": f"set {fmt(eps_s)}" + ("" if eps_s == eps_t else f" (default {fmt(eps_t)})"),
                "eps_changes": eps_s != eps_t,
                "momentum": (f"set {fmt(mom_t, 12)}" if num(mom_t) is None else f"set {num(mom_t):.4g}")
                            + ("" if mom_t == mom_d else f" (default {fmt(mom_d)})"),
                "momentum_changes": mom_t != mom_d,
                "axis": axis, "axis_changes": axis != "same layout",
                "estimator": "same" if est_s == est_t else f"{est_s} → {est_t}: cannot be converted; running "
                                                          "variance drifts by n/(n-1) per update",
                "estimator_changes": est_s != est_t,
                "naive_inf": sci(num(r.get("naive_inference_max_abs"))),
                "naive_var": sci(num(r.get("naive_running_var_k5_max_rel"))),
                "correct": sci(num(r.get("correct_port_max_abs"))),
            })
        worst_naive = max((num(p.get("naive_inference_max_abs")) or 0.0 for (a, b), p in pairs.items()
                           if a == s and b != s), default=0.0)
        groups.append({"source": s, "rows": rows, "worst_naive": sci(worst_naive)})
    cost = [[s] + [sci(num(pairs[(s, t)].get("naive_inference_max_abs"))) if (s, t) in pairs else "" for t in targets]
            for s in sources]
    n_pairs = sum(1 for s, t in pairs if s != t)
    changes = sum(1 for g in groups for r in g["rows"] if r["eps_changes"] or r["momentum_changes"])
    return {"groups": groups, "targets": targets, "cost": cost, "n_pairs": n_pairs, "changes": changes}


def _yn(v) -> str:
    return {True: "yes", False: "no"}.get(v, fmt(v, 12))


def freeze_sheet(freezes: list[dict], order: dict[str, int]) -> list[dict]:
    """Per adapter: idiom -> normalizes with, statistics move, parameters move (observed; ✗ where it differs from
    the declaration)."""
    by_adapter: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in sorted(freezes, key=lambda r: r.get("device") != "cpu"):
        by_adapter[str(r.get("adapter"))].setdefault(str(r.get("idiom")), r)
    out = []
    for a in sorted(by_adapter, key=lambda a: col_key(order, (a, ""))):
        rows = []
        for idiom, r in by_adapter[a].items():
            rows.append({"idiom": idiom, "normalizes": fmt(r.get("normalizes_with"), 12),
                         "stats": _yn(r.get("running_stats_update")), "params": _yn(r.get("params_update")),
                         "error": fmt(r.get("error"), 40) if r.get("error") else "",
                         "ok": r.get("passed") is not False,
                         "title": f"declared: {fmt(r.get('declared'), 200)}\nsource: {fmt(r.get('source'), 300)}"})
        out.append({"adapter": a, "rows": rows})
    return out


def is_batch_size_curve(rec: dict) -> bool:
    return "batch size" in str(rec.get("xlabel", "")).lower() or "batch_size" in str(rec.get("name", ""))
