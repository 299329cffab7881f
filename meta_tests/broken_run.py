"""The broken-adapter run: ONE pytest subprocess of the suites on the real torch adapter (loaded by path, as a user's
adapter would be) and every broken adapter of meta_tests/broken/, each broken adapter only in the suite tests that can
see its breakage (``seen_in``: the tests that write one of its expected properties, plus its ``SEES`` entry).

It runs once per meta-test process (run() is cached) and every meta test that needs a real failing case of a broken
adapter, or the real adapter's records, reads its records: meta_tests/test_broken_adapters.py (the suites fail on each
breakage), test_report_repro.py (a failing case's reproduction script), test_numeric_settings.py (the settings the
plugin records). Its results file lives in a temporary folder removed as soon as the records are read.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import subprocess
import sys
import tempfile

from meta_tests import broken as ba, seen_suites
from meta_tests.broken.base import ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITES = os.path.join(ROOT, "bnsuite", "suites")
REAL = "bnsuite.adapters.torch_bn:TorchBatchNorm"
# The suites that compile, export, loop over training steps, build real models or deep networks, or port from every
# framework: the torch group runs them on the real adapter; here only their broken adapters (torch subclasses with
# one thing broken, each running the whole tests that see it) run them, and the properties those record stand for
# the ones the real adapter checks (test_every_check_can_fail). The folding suite is not among them: its broken
# adapters run one path each.
LANE_MODULES = ("test_compiled.py", "test_deploy.py", "test_training_loops.py", "test_real_models.py",
                "test_batch_size.py", "test_deep_batch_size.py", "test_porting.py")
# Folding paths the real adapter leaves to the broken adapter that runs them (an export and QAT rewrite of about 4 s
# per case, the same work on both): the properties recorded there stand for the real adapter's, like the lanes'.
LEFT_TO_BROKEN = {"test_folding.py::test_folding": {"path": ["pt2e_qat"]}}


def _suite_sources() -> dict[str, str]:
    return {f: open(os.path.join(SUITES, f), encoding="utf-8").read()
            for f in sorted(os.listdir(SUITES)) if f.startswith("test_") and f.endswith(".py")}


def _strings(node) -> set[str]:
    return {c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)}


def _test_literals(sources: dict[str, str]) -> dict[str, set[str]]:
    """"module::test function" -> the string literals it can check: its own, those of the module's functions it calls
    or requests as fixtures, and those of the module-level names it reads (a table of property names), transitively."""
    out: dict[str, set[str]] = {}
    for f, text in sources.items():
        tree = ast.parse(text)
        funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        consts = {t.id: _strings(n.value) for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                  for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)
                  and n.value is not None}
        uses = {name: {x.id for x in ast.walk(fn) if isinstance(x, ast.Name)} | {a.arg for a in fn.args.args}
                for name, fn in funcs.items()}
        for name in funcs:
            if not name.startswith("test_"):
                continue
            seen, todo, lits = set(), [name], set()
            while todo:
                cur = todo.pop()
                if cur in seen:
                    continue
                seen.add(cur)
                lits |= _strings(funcs[cur])
                for used in uses[cur]:
                    if used in funcs:
                        todo.append(used)
                    lits |= consts.get(used, set())
            out[f"{f}::{name}"] = lits
    return out


@functools.cache
def suite_literals() -> dict[str, frozenset[str]]:
    """_test_literals of the suite modules, parsed once per session (the suites do not change during a run)."""
    return {t: frozenset(lits) for t, lits in _test_literals(_suite_sources()).items()}


def suite_tests_checking(prop: str, literals: dict[str, set[str]]) -> set[str]:
    """The suite tests ("module::function") that write `prop` whole (property names are string literals where they
    are checked)."""
    return {t for t, lits in literals.items() if prop in lits}


def seen_in(broken, literals: dict[str, set[str]] | None = None) -> set[str]:
    """Where a broken adapter runs: the tests checking one of its expected properties, plus its SEES entry (a module
    "test_<area>.py" or a test "test_<area>.py::test_name")."""
    literals = literals if literals is not None else suite_literals()
    where = set(ba.SEES.get(broken, ()))
    for prop in ba.EXPECTED_FAILURES[broken]:
        where |= suite_tests_checking(prop, literals)
    return where


@functools.cache
def run() -> tuple[subprocess.CompletedProcess, list[dict]]:
    """(the pytest process, its records)."""
    literals = suite_literals()
    only_in = {cls.id: {"in": sorted(seen_in(cls, literals)), "params": ba.ONLY_PARAMS.get(cls, {})}
               for cls in ba.EXPECTED_FAILURES}
    only_in["torch"] = {"in": sorted(set(_suite_sources()) - set(LANE_MODULES)), "skip": LEFT_TO_BROKEN}
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS")}
    env[seen_suites.ENV_VAR] = json.dumps(only_in)
    refs = [REAL] + [ref(cls) for cls in ba.EXPECTED_FAILURES]
    # The verdicts are read from the results file: --tb=line spares formatting the source of some 300 expected
    # failures (CPython 3.11's ast.parse can fail on deep tracebacks there, an INTERNALERROR that ends the run).
    with tempfile.TemporaryDirectory(prefix="bnsuite-broken-") as folder:
        results = os.path.join(folder, "results.jsonl")
        cmd = [sys.executable, "-m", "pytest", "bnsuite/suites", "-q", "-p", "no:cacheprovider", "-p",
               "meta_tests.seen_suites", "--device", "cpu", "--tb=line", f"--results={results}"]
        for adapter in refs:
            cmd += ["--adapter", adapter]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        records = [json.loads(line) for line in open(results, encoding="utf-8")] if os.path.exists(results) else []
    return proc, records
