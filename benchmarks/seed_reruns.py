#!/usr/bin/env python3
"""Reruns on other data (a script, not CI): every adapter group's suites with the data seeds 1..N (`--bn-seed`),
one group process per (seed, group), and per group how many seeds passed and which cases failed on which seed.

    python3 benchmarks/seed_reruns.py [--seeds 1-20] [--only GROUP ...] [--core] [--out seeds.json]

CI runs the default data (seed 0). The tolerances are derived so that a correct framework passes on ANY data the
suites draw (the statistical checks name their false-failure probability); this script is how that claim is tested.
Seeds run round-robin (seed 1 for every group, then seed 2, ...), so a run stopped early still covers every group
evenly; each finished run lands in --out at once, and a rerun with the same --out skips what it already holds.
--core leaves out the lanes that compile, export and train real models (compiled, deploy, folding, training loops,
real models), the costliest fifth of the suites; their data come from the same seeded generators.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bnsuite import groups, runner  # noqa: E402

LANES = ("test_compiled.py", "test_deploy.py", "test_folding.py", "test_training_loops.py", "test_real_models.py")


def seed_range(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    try:
        seeds = list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        seeds = []
    if not seeds or seeds[0] < 1:
        raise argparse.ArgumentTypeError(f"expected seeds like 1-20 (seed 0 is CI's data), got {text!r}")
    return seeds


def failed_cases(results: str) -> list[str]:
    """'test id: reason' of each failed case (the first line of its reason)."""
    out = []
    if os.path.exists(results):
        with open(results, encoding="utf-8") as fh:
            for line in fh:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if r.get("kind") == "outcome" and r.get("outcome") in ("failed", "error"):
                    reason = (str(r.get("reason") or "").strip().splitlines() or [""])[0][:300]
                    out.append(f"{r.get('test', '?')}: {reason}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=seed_range, default=seed_range("1-20"), help="a range, e.g. 1-20 (default)")
    ap.add_argument("--only", action="append", default=[], help="a group (python3 -m bnsuite groups); repeatable")
    ap.add_argument("--core", action="store_true", help="leave out the compile/export/real-model lanes")
    ap.add_argument("--out", default="seed_reruns.json", help="where the outcome per (group, seed) is kept")
    ap.add_argument("--case-timeout", type=int, default=1800,
                    help="seconds a case may take (--bn-case-timeout; this is not a timing run, so generous)")
    a = ap.parse_args()
    py = runner.ensure_venv(os.environ.get("BNSUITE_VENV", os.path.join(runner.ROOT, ".venv")))
    known = groups.builtin_groups()
    unknown = [g for g in a.only if g not in known]
    if unknown:
        ap.error(f"unknown group {unknown[0]!r}: use one of {', '.join(known)}")
    names = a.only or list(known)
    runner.GROUP_TIMEOUT_S = 4 * a.case_timeout  # a starved group on a loaded machine is not a failing framework
    done = json.load(open(a.out, encoding="utf-8")) if os.path.exists(a.out) else {}
    ignore = [f"--ignore=bnsuite/suites/{m}" for m in LANES] if a.core else []
    with tempfile.TemporaryDirectory() as run_dir:
        for seed in a.seeds:
            for g in names:
                key = f"{g}/{seed}"
                if key in done:
                    continue
                env, args = known[g]
                r = runner.run_group(py, f"{g}-seed{seed}", env, args, run_dir,
                                     [f"--bn-seed={seed}", f"--bn-case-timeout={a.case_timeout}", *ignore])
                failed = failed_cases(os.path.join(run_dir, f"{g}-seed{seed}.jsonl"))
                done[key] = {"passed": r["counts"].get("passed", 0), "failed": failed, "status": r.get("status"),
                             "wall_s": round(r["wall_s"], 1), "core": a.core, "at": time.strftime("%Y-%m-%d %H:%M")}
                print(f"{key}: {done[key]['passed']} passed, {len(failed)} failed {failed[:3]} "
                      f"({done[key]['wall_s']} s)", flush=True)
                with open(a.out, "w", encoding="utf-8") as fh:
                    json.dump(done, fh, indent=1, sort_keys=True)
    print(f"\n{'group':18s} {'seeds':>6s} {'all passed':>11s}  failures (seed: case)")
    for g in names:
        runs = {int(k.split("/")[1]): v for k, v in done.items() if k.split("/")[0] == g}
        bad = {s: v["failed"] or [v["status"]] for s, v in sorted(runs.items())
               if v["failed"] or v["status"] not in ("complete", None)}
        print(f"{g:18s} {len(runs):6d} {len(runs) - len(bad):11d}  "
              + "; ".join(f"{s}: {', '.join(c)}" for s, c in bad.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
