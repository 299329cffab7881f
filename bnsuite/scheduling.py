"""How the runner shares 2 cores between the groups it runs at once: which group starts first, and how many threads
each framework's kernels may use.

Standard library only (the runner imports it before any environment exists).

* order(): longest group first, by the measured costs in bnsuite/group_costs.json (a group with no measurement
  goes first: an unmeasured group is the one that can surprise the end of the run). With J groups at a time, the run
  then ends close to (sum of costs) / J instead of waiting for a long group started last.
* thread_env(): the cores split between the groups that run at once (OMP_NUM_THREADS = cores // jobs, at least 1).
  torch's OpenMP kernels otherwise start one spinning thread per core in EACH group, and two groups on two cores
  spend most of their CPU time waiting on each other's threads (the torch group: 22-41 s of CPU with the default,
  12 s with one thread, identical verdicts). A value the user set is kept.
"""

from __future__ import annotations

import json
import os

COSTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "group_costs.json")
THREAD_VARS = ("OMP_NUM_THREADS",)


def costs(path: str = COSTS_FILE) -> dict[str, float]:
    """group -> measured wall seconds; {} where the file is missing or unreadable (then the order is kept)."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in raw.items() if not k.startswith("_") and isinstance(v, (int, float))}


def order(groups: list, cost: dict[str, float] | None = None) -> list:
    """`groups` ([(name, ...)] or [name]) sorted longest first; unmeasured groups first, ties keep their order."""
    cost = costs() if cost is None else cost
    name = lambda g: g[0] if isinstance(g, tuple) else g
    return sorted(groups, key=lambda g: -cost.get(name(g), float("inf")))


def thread_env(jobs: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The thread-count variables for one group of `jobs` running at once, except those already set."""
    environ = os.environ if environ is None else environ
    n = str(max(1, (os.cpu_count() or 1) // max(1, jobs)))
    return {k: n for k in THREAD_VARS if not environ.get(k)}
