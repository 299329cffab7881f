#!/usr/bin/env python3
"""The suite's own mutation score, measured by a tool (cosmic-ray), not CI: the minimal NumPy adapter
(meta_tests/minimal_numpy_adapter.py) is copied into a temporary package and plugged in from outside, as a user's own
BatchNorm would be; cosmic-ray mutates the BatchNorm computation (NumpyBatchNorm.__init__ and __call__) and the
adapter's declare / forward / get_state / set_state, and runs the whole suite once per mutant:

    python -m pytest bnsuite/suites --adapter <temporary package>:MinimalNumpyBatchNorm -x -q -p no:cacheprovider

A mutant the suite fails on is killed; one it passes survives, unless it is listed in EXPLAINED below: "equivalent"
(no input the adapter contract allows tells it from the original), "undeclared" (it differs only on an input where
real frameworks legitimately differ and the adapter declares nothing: the minimal adapter has no edge_facts, so the
suite skips those cases by design) or "unobservable" (a declared value the four required methods cannot show).
Prints killed / survived / equivalent / undeclared / unobservable / timed out and every unexplained survivor; exits 1
while one is left.

    /work/venvs/mutation/bin/python benchmarks/mutation_score.py --python /work/main/.venv/bin/python

cosmic-ray (pinned in requirements/all.txt, the `mutation` extra) must be importable by the interpreter running this
script; --python is the one with the frameworks that runs the suite (default: this one). Runs the mutants one after
another under nice.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "meta_tests", "minimal_numpy_adapter.py")
PACKAGE, MODULE = "user_bn", "numpy_bn"
ADAPTER = f"{PACKAGE}.{MODULE}:MinimalNumpyBatchNorm"
# The functions mutated: the layer's computation and the adapter's four required methods (not its spec guards).
MUTATED = {"NumpyBatchNorm": ("__init__", "__call__"),
           "MinimalNumpyBatchNorm": ("declare", "forward", "get_state", "set_state")}

# Surviving mutants the suite cannot and need not kill, keyed by (original line, mutated line) as cosmic-ray writes
# them, stripped: (kind, why).
_RESHAPE = "NumPy's reshape takes any negative size as the one inferred dimension, so -2 reshapes like -1"
_N = "n = x.size // x.shape[axis]"
_UNBIASED = "unbiased = var * (n / (n - 1)) if n > 1 else var"
_AXES = "axes = tuple(a for a in range(x.ndim) if a != axis)"
_SET = 'if value is not None and (self.spec.affine or name.startswith("running")):'
_UNDECLARED = "(the minimal adapter declares no edge_facts, so its edge-input cases skip by design)"
_EMPTY = ("an empty training batch gives NaN running statistics instead of an error, as Keras does "
          f"(adapters/edge_facts.py: 'running stats nan') {_UNDECLARED}")
_EPS = ("eps <= 0 is accepted (in part) instead of refused; frameworks differ there (eps_zero, eps_negative) "
        f"{_UNDECLARED}")
_LAYOUT = 'default_channels_last=Cited(False, f"{_SRC}: NumpyBatchNorm.__init__(axis=1)"),'
EXPLAINED: dict[tuple[str, str], tuple[str, str]] = {
    ("shape[axis] = -1", "shape[axis] = ~1"): ("equivalent", _RESHAPE),
    ("shape[axis] = -1", "shape[axis] = - 2"): ("equivalent", _RESHAPE),
    (_N, _N.replace("//", "/")): (
        "equivalent", "x.size is a multiple of x.shape[axis]: the float quotient is the same whole number n, used only "
        "in comparisons and in n / (n - 1)"),
    (_UNBIASED, _UNBIASED.replace("n > 1", "n != 1")): (
        "equivalent", "n >= 1 here (n == 0 raised just above), where n > 1 and n != 1 agree"),
    (_AXES, _AXES.replace("!=", "is not")): (
        "equivalent", "CPython caches the ints -5..256 and an array has at most 64 axes, so `is not` is `!=` here"),
    (_SET, _SET.replace("is not None and", "is not None or")): (
        "equivalent", "differs only when a State carrying scale/offset is loaded into an affine=False layer; "
        "get_state never gives one, and no caller may pass one (the State of a layer without affine parameters)"),
    ("if n == 0:", "if n <= 0:"): ("equivalent", "n is a count, never negative: n <= 0 is n == 0"),
    ("if n == 0:", "if n == -1:"): ("undeclared", _EMPTY),
    ("if n == 0:", "if n < 0:"): ("undeclared", _EMPTY),
    ("if not eps > 0:", "if not eps > -1:"): ("undeclared", _EPS),
    ("if not eps > 0:", "if not eps >= 0:"): ("undeclared", _EPS),
    ("if not eps > 0:", "if not eps != 0:"): ("undeclared", _EPS),
    (_LAYOUT, _LAYOUT.replace("Cited(False", "Cited(True")): (
        "unobservable", "every layer, a default one too, gets its layout from the spec, so a declared default layout "
        "shows only in hyperparameters(), which the minimal adapter leaves out on purpose (test_defaults.py)"),
}


def mutated_lines(path: str) -> set[int]:
    """The line numbers of the bodies of the MUTATED functions, without their docstrings."""
    lines: set[int] = set()
    for cls in ast.parse(open(path).read()).body:
        if not isinstance(cls, ast.ClassDef) or cls.name not in MUTATED:
            continue
        for fn in cls.body:
            if isinstance(fn, ast.FunctionDef) and fn.name in MUTATED[cls.name]:
                body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) and isinstance(
                    getattr(fn.body[0], "value", None), ast.Constant) else fn.body
                lines.update(range(body[0].lineno, fn.end_lineno + 1))
    return lines


def diff_lines(diff: str) -> tuple[str, str]:
    """The (original, mutated) line of a one-line mutation's unified diff."""
    minus = [d[1:].strip() for d in diff.splitlines() if d.startswith("-") and not d.startswith("---")]
    plus = [d[1:].strip() for d in diff.splitlines() if d.startswith("+") and not d.startswith("+++")]
    return " / ".join(minus), " / ".join(plus)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable,
                    help="the interpreter (with the frameworks) that runs the suite (default: this one)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per mutant (default: 10 times the clean run, at least 60)")
    a = ap.parse_args()
    try:
        from cosmic_ray.work_db import WorkDB, use_db
        from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult
        import cosmic_ray
    except ImportError:
        print("cosmic-ray is not installed here: pip install cosmic-ray==8.7.0 (the mutation extra)", file=sys.stderr)
        return 2
    from importlib.metadata import version
    print(f"cosmic-ray {version('cosmic-ray')} over {os.path.relpath(SOURCE, ROOT)}", flush=True)

    tmp = tempfile.mkdtemp(prefix="bnsuite-mutation-")
    try:
        pkg = os.path.join(tmp, PACKAGE)
        os.makedirs(pkg)
        open(os.path.join(pkg, "__init__.py"), "w").close()
        target = os.path.join(pkg, MODULE + ".py")
        shutil.copy(SOURCE, target)
        env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS")}
        env["PYTHONPATH"] = os.pathsep.join([tmp, ROOT])
        test = [a.python, "-m", "pytest", "bnsuite/suites", "--adapter", ADAPTER, "-x", "-q", "-p", "no:cacheprovider",
                "--device", "cpu", f"--results={os.path.join(tmp, 'results.jsonl')}"]

        t0 = time.time()
        clean = subprocess.run(["nice", "-n", "10", *test], cwd=ROOT, env=env, capture_output=True, text=True)
        clean_s = time.time() - t0
        if clean.returncode != 0:
            print(f"the clean run fails (exit {clean.returncode}), nothing to measure:\n{clean.stdout[-2000:]}")
            return 2
        timeout = a.timeout or max(60.0, 10 * clean_s)
        print(f"clean run: {clean_s:.1f} s ({clean.stdout.strip().splitlines()[-1]}); timeout {timeout:.0f} s",
              flush=True)

        config = os.path.join(tmp, "cosmic-ray.toml")
        with open(config, "w") as f:
            f.write("[cosmic-ray]\n"
                    f"module-path = {target!r}\n"
                    f"timeout = {timeout}\n"
                    "excluded-modules = []\n"
                    f"test-command = {' '.join(test)!r}\n"
                    "[cosmic-ray.distributor]\nname = 'local'\n")
        session = os.path.join(tmp, "session.sqlite")
        cr = [sys.executable, "-m", "cosmic_ray.cli"]
        subprocess.run([*cr, "init", config, session], cwd=ROOT, env=env, check=True)

        keep = mutated_lines(target)
        with use_db(session, WorkDB.Mode.open) as db:
            outside = [w.job_id for w in db.work_items if w.mutations[0].start_pos[0] not in keep]
            db.set_multiple_results(outside, WorkResult(worker_outcome=WorkerOutcome.SKIPPED,
                                                        output="outside the mutated functions"))
            n = db.num_work_items - len(outside)
        print(f"{n} mutants in the mutated functions ({len(outside)} elsewhere in the file left alone)", flush=True)

        t0 = time.time()
        subprocess.run(["nice", "-n", "10", *cr, "exec", config, session], cwd=ROOT, env=env, check=True)
        run_s = time.time() - t0

        counts = {"killed": 0, "survived": 0, "equivalent": 0, "undeclared": 0, "unobservable": 0, "timed out": 0,
                  "incompetent": 0}
        survivors, equivalents = [], []
        with use_db(session, WorkDB.Mode.open) as db:
            for item, result in db.completed_work_items:
                if result.worker_outcome == WorkerOutcome.SKIPPED:
                    continue
                m = item.mutations[0]
                where = f"line {m.start_pos[0]} {m.operator_name} #{m.occurrence}"
                if result.test_outcome == TestOutcome.SURVIVED:
                    key = diff_lines(result.diff or "")
                    if key in EXPLAINED:
                        kind, why = EXPLAINED[key]
                        counts[kind] += 1
                        equivalents.append((where, key, kind, why))
                    else:
                        counts["survived"] += 1
                        survivors.append((where, key))
                elif result.test_outcome == TestOutcome.KILLED:
                    counts["timed out" if result.output == "timeout" else "killed"] += 1
                else:
                    counts["incompetent"] += 1
        for where, (old, new), kind, why in sorted(equivalents):
            print(f"{kind:<11} {where}: {old}  ->  {new}\n            {why}")
        for where, (old, new) in sorted(survivors):
            print(f"SURVIVED    {where}: {old}  ->  {new}")
        print(f"mutants: {n}; " + ", ".join(f"{k}: {v}" for k, v in counts.items()) + f"; {run_s:.0f} s")
        unused = set(EXPLAINED) - {key for _, key, _, _ in equivalents}
        for old, new in sorted(unused):
            print(f"warning: an EXPLAINED entry matched no surviving mutant: {old} -> {new}")
        return 1 if survivors else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
