#!/usr/bin/env python3
"""Speed benchmark (a script, not a timed test): per adapter group, side by side, the suite's wall time and CPU time,
the bare import time of its framework(s), the number of cases, and the suite/import ratio (the budget: 5x).

    python3 benchmarks/bench_groups.py [--only GROUP ...] [--jobs 2] [--cold] [--write-costs]

Runs groups one at a time so timings do not compete for the 2 cores, each with the thread split the main job gives a
group when it runs --jobs groups at once (bnsuite/scheduling.py). --cold gives each group an empty JAX compilation
cache, as a fresh clone has; --write-costs stores the wall times in bnsuite/group_costs.json, which orders the main
job's groups (longest first). CPU seconds (user + system of the group's processes) move far less than wall seconds
on a shared machine: compare changes by them when the machine is busy. Uses the venv that the runner manages.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bnsuite import groups, runner, scheduling  # noqa: E402
from bnsuite.adapters import registry  # noqa: E402

# Group -> the import line of the modules its adapter requires (its framework rows, bnsuite/adapters/frameworks.py).
IMPORTS = {i: "import " + ", ".join(registry.load(i).requires) for i in registry.BUILTIN}


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def import_time(py: str, group: str) -> float:
    if group not in IMPORTS:  # the meta group imports no one framework
        return float("nan")
    env = {**os.environ, **runner.GROUPS[group][0], "TF_CPP_MIN_LOG_LEVEL": "3"}
    t0 = time.time()
    subprocess.run([py, "-c", IMPORTS[group]], env=env, check=True, capture_output=True)
    return time.time() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--jobs", type=int, default=2, help="groups the main job runs at once (sets the thread split)")
    ap.add_argument("--cold", action="store_true", help="an empty JAX compilation cache per group (a fresh clone)")
    ap.add_argument("--write-costs", action="store_true", help=f"store the wall times in {scheduling.COSTS_FILE}")
    a = ap.parse_args()
    if a.jobs < 1:
        ap.error("--jobs must be at least 1")
    py = runner.ensure_venv(os.environ.get("BNSUITE_VENV", os.path.join(runner.ROOT, ".venv")))
    known = dict([*runner.builtin_groups().items(), runner.META_GROUP, ("meta-slow", runner.META_GROUP[1])])
    unknown = [g for g in a.only if g not in known]
    if unknown:
        ap.error(f"unknown group {unknown[0]!r}: use one of {', '.join(known)}")
    groups = a.only or list(known)
    threads = scheduling.thread_env(a.jobs)
    print(f"threads per group: {threads or 'as set in the environment'}; JAX cache: "
          f"{'empty per group' if a.cold else 'as configured'}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as run_dir:
        for g in groups:
            imp = import_time(py, g)
            env, args = known[g]
            extra = {**env, **threads}
            if a.cold:
                extra["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"jax-{g}-", dir=run_dir)
            marks = groups.META_MARKERS["matrix"].get(g) or groups.META_MARKERS["test"].get(g)
            if marks:
                args = [*args, "-m", marks]  # the main job's meta group; meta-slow as the test command runs it
            cpu0 = children_cpu()
            r = runner.run_group(py, g, extra, args, run_dir, [])
            cpu = children_cpu() - cpu0
            cases = sum(r["counts"].values())
            rows.append((g, r["wall_s"], cpu, imp, cases, r["counts"].get("passed", 0)))
            print(f"{g}: {r['wall_s']:.1f} s wall, {cpu:.1f} s CPU, import {imp:.1f} s, {cases} cases", flush=True)
    print(f"\n{'group':18s} {'suite s':>8s} {'CPU s':>7s} {'import s':>9s} {'cases':>6s} {'passed':>7s} "
          f"{'cases/s':>8s} {'suite/import':>13s}")
    for g, wall, cpu, imp, cases, passed in rows:
        print(f"{g:18s} {wall:8.1f} {cpu:7.1f} {imp:9.1f} {cases:6d} {passed:7d} {cases / wall:8.1f} "
              f"{wall / imp:13.1f}")
    total = sum(r[1] for r in rows)
    print(f"{'sum':18s} {total:8.1f} {sum(r[2] for r in rows):7.1f}   (the main job, {a.jobs} at a time, needs at "
          f"least {total / a.jobs:.0f} s)")
    if a.write_costs:
        with open(scheduling.COSTS_FILE, encoding="utf-8") as fh:
            data = json.load(fh)
        data.update({g: round(wall, 1) for g, wall, *_ in rows})
        with open(scheduling.COSTS_FILE, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        print(f"wrote {os.path.relpath(scheduling.COSTS_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
