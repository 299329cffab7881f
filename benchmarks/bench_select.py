#!/usr/bin/env python3
"""Speed benchmark (a script, not a timed test) of one pytest selection as a user types it, e.g. `pytest -k torch`:
wall time of the whole command (interpreter start, collection, the cases, the terminal summary) and the time pytest
reports for itself, over several runs, with the minimum and the median.

    python3 benchmarks/bench_select.py [-k torch] [--runs 5] [-- extra pytest args]

The budget for `pytest -k torch` is 8 s on 2 cores. Runs one after another in the runner's venv; the machine should
be otherwise idle.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bnsuite import runner  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default="torch", help="the pytest -k expression (default: torch)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("extra", nargs="*", help="more pytest arguments, after --")
    a = ap.parse_args()
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    py = runner.ensure_venv(os.environ.get("BNSUITE_VENV", os.path.join(runner.ROOT, ".venv")))
    cmd = [py, "-m", "pytest", "-k", a.k, "-q", "-p", "no:cacheprovider", *a.extra]
    print("command:", " ".join(cmd[1:]), flush=True)
    walls, inner = [], []
    for i in range(a.runs):
        t0 = time.time()
        out = subprocess.run(cmd, cwd=runner.ROOT, capture_output=True, text=True)
        walls.append(time.time() - t0)
        last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
        m = re.search(r" in ([0-9.]+)s", last)
        inner.append(float(m.group(1)) if m else float("nan"))
        print(f"run {i + 1}: {walls[-1]:.2f} s wall, pytest {inner[-1]:.2f} s  ({last.strip('= ')})", flush=True)
        if out.returncode not in (0, 5):
            print(f"pytest exited {out.returncode}; the timing is not of a green run", file=sys.stderr)
            return 1
    print(f"wall: min {min(walls):.2f} s, median {statistics.median(walls):.2f} s; "
          f"pytest: min {min(inner):.2f} s, median {statistics.median(inner):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
