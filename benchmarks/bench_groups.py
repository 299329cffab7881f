#!/usr/bin/env python3
"""Speed benchmark (a script, not a timed test): per adapter group, side by side, the suite's wall time and CPU time,
the bare import time of its framework(s), the number of cases, and the suite/import ratio (the budget: 5x).

    python3 benchmarks/bench_groups.py [--only GROUP ...] [--jobs 2] [--cold] [--compile-clock] [--write-costs]

Runs groups one at a time so timings do not compete for the 2 cores, each with the thread split the main job gives a
group when it runs --jobs groups at once (bnsuite/scheduling.py). --cold gives each group empty compilation caches
(JAX's, Inductor's, tinygrad's, and a fresh TMPDIR, where Inductor keeps its precompiled headers and MLX its compiled
kernels), as a fresh clone on a fresh machine has; --compile-clock adds, per group, the CPU seconds of importing the
frameworks and of their compilers (benchmarks/compile_clock.py) and what is left for the cases themselves;
--write-costs stores the wall times in bnsuite/group_costs.json, which orders the main job's groups (longest first).
CPU seconds (user + system of the group's processes) move far less than wall seconds on a shared machine: compare
changes by them when the machine is busy. Uses the venv that the runner manages.
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


CLOCKED = ("import", "jax", "tinygrad", "torch", "tensorflow")  # benchmarks/compile_clock.py's categories


def cold_caches(group: str, run_dir: str) -> dict[str, str]:
    """Environment for a group that finds every compilation cache empty, as a fresh clone does."""
    fresh = tempfile.mkdtemp(prefix=f"cold-{group}-", dir=run_dir)
    return {"JAX_COMPILATION_CACHE_DIR": os.path.join(fresh, "jax"),
            "TORCHINDUCTOR_CACHE_DIR": os.path.join(fresh, "torchinductor"),
            "CACHEDB": os.path.join(fresh, "tinygrad.db"),
            "TMPDIR": fresh}  # Inductor's headers ($TMPDIR/torchinductor_<user>), MLX's kernels ($TMPDIR/mlx)


def read_clock(path: str) -> dict[str, float]:
    """The compile clock's lines of one group (one per pytest process), summed."""
    total: dict[str, float] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                for k, v in json.loads(line).items():
                    if k in CLOCKED:
                        total[k] = total.get(k, 0.0) + v
    return total


def print_clocks(rows, clocks) -> None:
    print(f"\n{'group':18s} {'CPU s':>7s} {'imports':>8s} {'compilers':>10s} {'rest':>7s}   (compilers: "
          f"{', '.join(CLOCKED[1:])})")
    sums = [0.0, 0.0, 0.0, 0.0]
    for g, _wall, cpu, *_ in rows:
        c = clocks.get(g, {})
        imp, comp = c.get("import", 0.0), sum(v for k, v in c.items() if k != "import")
        vals = [cpu, imp, comp, cpu - imp - comp]
        sums = [s + v for s, v in zip(sums, vals)]
        print(f"{g:18s} {vals[0]:7.1f} {vals[1]:8.1f} {vals[2]:10.1f} {vals[3]:7.1f}")
    print(f"{'sum':18s} {sums[0]:7.1f} {sums[1]:8.1f} {sums[2]:10.1f} {sums[3]:7.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--jobs", type=int, default=2, help="groups the main job runs at once (sets the thread split)")
    ap.add_argument("--cold", action="store_true", help="empty compilation caches per group (a fresh clone)")
    ap.add_argument("--compile-clock", action="store_true",
                    help="split each group's CPU into framework imports, compilers and the rest")
    ap.add_argument("--write-costs", action="store_true", help=f"store the wall times in {scheduling.COSTS_FILE}")
    a = ap.parse_args()
    if a.jobs < 1:
        ap.error("--jobs must be at least 1")
    py = runner.ensure_venv(os.environ.get("BNSUITE_VENV", os.path.join(runner.ROOT, ".venv")))
    known = dict([*runner.builtin_groups().items(), runner.META_GROUP, ("meta-slow", runner.META_GROUP[1])])
    unknown = [g for g in a.only if g not in known]
    if unknown:
        ap.error(f"unknown group {unknown[0]!r}: use one of {', '.join(known)}")
    names = a.only or list(known)
    threads = scheduling.thread_env(a.jobs)
    print(f"threads per group: {threads or 'as set in the environment'}; compilation caches: "
          f"{'empty per group' if a.cold else 'as configured'}", flush=True)
    clocks = {}
    rows = []
    with tempfile.TemporaryDirectory() as run_dir:
        for g in names:
            imp = import_time(py, g)
            env, args = known[g]
            extra = {**env, **threads}
            if a.cold:
                extra.update(cold_caches(g, run_dir))
            if a.compile_clock:
                clock = os.path.join(run_dir, f"clock-{g}.jsonl")
                extra["BNSUITE_COMPILE_CLOCK"] = clock
                extra["PYTEST_ADDOPTS"] = f"{os.environ.get('PYTEST_ADDOPTS', '')} -p benchmarks.compile_clock"
                extra["PYTHONPATH"] = os.pathsep.join(p for p in (runner.ROOT, os.environ.get("PYTHONPATH")) if p)
            marks = groups.META_MARKERS["matrix"].get(g) or groups.META_MARKERS["test"].get(g)
            if marks:
                args = [*args, "-m", marks]  # the main job's meta group; meta-slow as the test command runs it
            cpu0 = children_cpu()
            r = runner.run_group(py, g, extra, args, run_dir, [])
            cpu = children_cpu() - cpu0
            cases = sum(r["counts"].values())
            rows.append((g, r["wall_s"], cpu, imp, cases, r["counts"].get("passed", 0)))
            print(f"{g}: {r['wall_s']:.1f} s wall, {cpu:.1f} s CPU, import {imp:.1f} s, {cases} cases", flush=True)
            if a.compile_clock:
                clocks[g] = read_clock(clock)
                print(f"  {g}: " + ", ".join(f"{k} {v:.1f}" for k, v in clocks[g].items()) + " CPU s", flush=True)
    print(f"\n{'group':18s} {'suite s':>8s} {'CPU s':>7s} {'import s':>9s} {'cases':>6s} {'passed':>7s} "
          f"{'cases/s':>8s} {'suite/import':>13s}")
    for g, wall, cpu, imp, cases, passed in rows:
        print(f"{g:18s} {wall:8.1f} {cpu:7.1f} {imp:9.1f} {cases:6d} {passed:7d} {cases / wall:8.1f} "
              f"{wall / imp:13.1f}")
    total = sum(r[1] for r in rows)
    print(f"{'sum':18s} {total:8.1f} {sum(r[2] for r in rows):7.1f}   (the main job, {a.jobs} at a time, needs at "
          f"least {total / a.jobs:.0f} s)")
    if clocks:
        print_clocks(rows, clocks)
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
