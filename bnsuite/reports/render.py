"""Render results files into ONE self-contained HTML page (Jinja2 template, autoescaped, no external resources).

    python -m bnsuite.reports.render RESULTS... [-o report/index.html] [--compare OLD_RESULTS...]

RESULTS may be files or directories (all *.jsonl inside). Exit status: 0 report written from clean input;
1 report written, but some input was unreadable (one stderr line per problem); 2 nothing written.

This module only assembles: reading (inputs), ordering (order), the front page (front), the matrix (matrix), plots
(plots), reference sections (details) and compare (drift against an older run) each live in their own module.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import jinja2

from bnsuite.reports import compiled, deploy, details, folding, front, loops, matrix, real_models, runs, slowest
from bnsuite.reports.compare import drift
from bnsuite.reports.inputs import by_kind, load
from bnsuite.reports.order import adapter_order
from bnsuite.reports.plots import svg_plot
from bnsuite.reports.values import fmt, num, sci

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPECIAL_MATRICES = ("freeze", "port", "weight_layout", loops.NAME, "deploy", "deploy_export")  # with their own view


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


def context(records: list[dict], files: list[str], old: list[dict] | None, problems: list[str],
            repo_rel: str = "..") -> dict:
    kinds = by_kind(records)
    checks, outcomes = kinds["check"], kinds["outcome"]
    order = adapter_order(kinds["declaration"], records)
    curves: dict[str, list[dict]] = defaultdict(list)
    for c in kinds["curve"]:
        if isinstance(c.get("x"), list) and isinstance(c.get("y"), list) and len(c["x"]) == len(c["y"]):
            curves[str(c.get("name", "curve"))].append(c)
        else:
            problems.append(f"{c['_file']}: curve {fmt(c.get('name'))!s} skipped (x and y must be lists of equal length)")
    for recs in curves.values():
        recs.sort(key=lambda r: order.get(str(r.get("adapter")), len(order)))
    plots = [svg_plot(n, cs) for n, cs in curves.items()]
    batch_plots = [p for p, cs in zip(plots, curves.values()) if front.is_batch_size_curve(cs[0])]
    other_plots = [p for p in plots if p not in batch_plots]
    matrices = defaultdict(list)
    for m in kinds["matrix"]:
        matrices[str(m.get("name"))].append(m)
    other = [m for m in kinds["matrix"] if str(m.get("name")) not in SPECIAL_MATRICES]
    starts = sorted(str(e["started"])[:19].replace("T", " ") for e in kinds["env"] if e.get("started"))
    finding_list = front.findings_list(kinds["finding"], checks, kinds["env"], repo_rel)
    return {
        "generated": datetime.datetime.now().isoformat(timespec="seconds"),
        "runs_started": (starts[0], starts[-1]) if starts else None,
        "files": files, "n_records": len(records), "problems": problems,
        "counts": Counter(str(o.get("outcome", "?")) for o in outcomes),
        "n_checks": len(checks), "n_failed_checks": sum(c.get("passed") is not True for c in checks),
        "n_adapters": len(order),
        "findings": finding_list, "findings_by_adapter": front.findings_by_adapter(finding_list, order),
        "n_upstream": sum(1 for f in finding_list if f["upstream_status"] != "not-reported"),
        "porting": front.porting_guide(matrices["port"], kinds["declaration"], order),
        "weight_layouts": front.weight_layouts(matrices["weight_layout"], order),
        "freeze": front.freeze_sheet(matrices["freeze"], order),
        "folding": folding.folding_table(checks, order),
        "training_loops": loops.tables(matrices[loops.NAME], order),
        "deploying": deploy.deploying(matrices["deploy"], matrices["deploy_export"], order),
        "compiled": compiled.view(checks, order),
        "batch_plots": batch_plots, "other_plots": other_plots,
        "real_batch": real_models.batch_table(checks, order), "real_freeze": real_models.freeze_table(checks, order),
        "drift": drift(records, old) if old is not None else None,
        "matrix": matrix.behaviour_matrix(checks, order),
        "other_matrices": matrix.record_matrix(other, order, "idiom") if other else None,
        "not_measured": details.not_measured(checks, outcomes, order),
        "failures": details.failures(checks, outcomes),
        "declarations": details.declarations(kinds["declaration"], order),
        "tables": details.table_groups(kinds["table"], problems),
        "environment": details.environment(files, kinds["env"]),
        "group_runs": runs.unusual(kinds["group"]),
        "slowest": slowest.slowest(outcomes, kinds["env"]),
    }


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    env.filters["sci"] = lambda v: sci(num(v))
    return env


def render(paths: list[str], out: str, compare: list[str] | None = None) -> RenderSummary:
    """Merge results files into one HTML report at `out`; never drops valid records because of corrupt ones."""
    t0 = time.perf_counter()
    files, records, problems = load(paths)
    old = None
    if compare is not None:
        _, old, old_problems = load(compare)
        problems += old_problems
    summary = RenderSummary(out=None, files=files, records=len(records), problems=problems)
    if not records:
        return summary
    repo_rel = os.path.relpath(ROOT, os.path.dirname(os.path.abspath(out)))
    ctx = context(records, files, old, problems, repo_rel)
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
    if s.out is None:  # one line: what was wrong with each input
        why = f" ({'; '.join(s.problems)})" if s.problems else ""
        print(f"render: no valid results records in {', '.join(args.results)}{why}; no report written", file=sys.stderr)
        return 2
    for p in s.problems:
        print(p, file=sys.stderr)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(s.outcomes.items())) or "no test outcomes"
    print(f"report written: {s.out} ({s.records} records from {len(s.files)} files; {counts}; {s.seconds:.2f}s)")
    return s.exit_code


if __name__ == "__main__":
    sys.exit(main())
