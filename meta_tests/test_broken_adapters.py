"""The suites must FAIL on a broken adapter, on the property that names the breakage, and pass the real one.

All broken adapters (meta_tests/broken/, one module per semantic area) and the real torch adapter (loaded by path, as
a user's adapter would be) run in ONE pytest subprocess; each test below then reads its adapter's records from the
results file. The real adapter runs every suite module; each broken adapter only the suite tests that can see its
breakage (``seen_in``: the tests that write one of its expected properties, plus its ``SEES`` entry), which keeps the
run short while ``test_every_check_can_fail`` still covers every property the suites check.
"""

import ast
import functools
import json
import os
import re
import subprocess
import sys

import pytest

from meta_tests import broken as ba, seen_suites
from meta_tests.broken.base import ref
from meta_tests.suite_outcomes import assert_ran_clean

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


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("broken") / "results.jsonl"
    literals = suite_literals()
    only_in = {cls.id: {"in": sorted(seen_in(cls, literals)), "params": ba.ONLY_PARAMS.get(cls, {})}
               for cls in ba.EXPECTED_FAILURES}
    only_in["torch"] = {"in": sorted(set(_suite_sources()) - set(LANE_MODULES)), "skip": LEFT_TO_BROKEN}
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS")}
    env[seen_suites.ENV_VAR] = json.dumps(only_in)
    refs = [REAL] + [ref(cls) for cls in ba.EXPECTED_FAILURES]
    # The verdicts are read from the results file: --tb=line spares formatting the source of some 300 expected
    # failures (CPython 3.11's ast.parse can fail on deep tracebacks there, an INTERNALERROR that ends the run).
    cmd = [sys.executable, "-m", "pytest", "bnsuite/suites", "-q", "-p", "no:cacheprovider", "-p",
           "meta_tests.seen_suites", "--device", "cpu", "--tb=line", f"--results={results}"]
    for adapter in refs:
        cmd += ["--adapter", adapter]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    records = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    return proc, records


@pytest.mark.parametrize("broken", list(ba.EXPECTED_FAILURES), ids=lambda c: c.id)
def test_every_expected_property_is_seen(broken):
    """Each expected property is checked by a suite test the adapter runs in (written whole there); an adapter whose
    expected properties include one no suite writes whole (a declared Probe's) names where it is checked in SEES."""
    literals = suite_literals()
    unseen = sorted(p for p in ba.EXPECTED_FAILURES[broken] if not suite_tests_checking(p, literals))
    assert not unseen or broken in ba.SEES, (f"{broken.id}: no suite test writes {unseen} whole; name the module or "
                                             "test that checks them in the SEES of its meta_tests/broken module")


def failed_properties(records, adapter_id):
    return {r["property"] for r in records
            if r["kind"] == "check" and r["adapter"] == adapter_id and not r["passed"]}


@pytest.mark.parametrize("broken", list(ba.EXPECTED_FAILURES), ids=lambda c: c.id)
def test_suite_fails_on_broken_adapter(broken, suite_run):
    proc, records = suite_run
    assert proc.returncode == 1, f"pytest exit {proc.returncode}, expected 1 (tests failed)\n{proc.stdout[-2000:]}"
    failed = failed_properties(records, broken.id)
    missing = ba.EXPECTED_FAILURES[broken] - failed
    assert not missing, f"{broken.id}: the suites did not fail on {sorted(missing)}; they failed on {sorted(failed)}"


# Records that are information by design (a measurement shown in the report, never a pass/fail judgement).
# Checks whose breakage needs something a wrapped torch layer cannot express, with where they are proven instead.
NOT_BREAKABLE_HERE = {
    "running_var_ratio_sampling_theory": "checks the oracle's own ratio on the test data against sampling theory (a "
                                         "check of the test design); the adapter's value is running_var_at_batch_size",
    "network_weight_conv.bias": "the conv bias feeds a training-mode BatchNorm, which removes any per-channel shift: "
                                "its gradient is 0 in exact arithmetic, so no network moves it; the check stays to "
                                "catch a BatchNorm that stops centering (which the single-layer suites also catch)",
}

INFORMATIONAL = {
    "inference_batch_size_exactly_invariant": "exact zero vs small nonzero is reported, the bound is asserted "
                                              "by inference_batch_size_invariance",
    "deep_inference_batch_size_exactly_invariant": "likewise, asserted by deep_inference_batch_size_invariance",
    "real_model_batch_size_bitwise_invariant": "likewise, asserted by real_model_inference_batch_size_invariance",
    "hard_input_findings": "the summary of NaN / negative variance / lost digits; asserted per example",
    "traps": "an adapter that declares no traps",
    "population_recompute_ratio": "trained vs recomputed ratio for the report; asserted by population_recompute_*",
}


def test_every_check_can_fail(suite_run):
    """Every property the suites check on the real adapter fails on at least one broken adapter (or is
    informational by design, or is listed below with the reason torch cannot break it)."""
    _, records = suite_run
    checks = [r for r in records if r["kind"] == "check"]
    in_lanes = {m: {r["property"] for r in checks if r["test"].split("::")[0].endswith(m)} for m in LANE_MODULES}
    in_lanes |= {f"{test} {name}={value}": {r["property"] for r in checks if r["test"].split("[")[0].endswith(test)
                                             and r.get(name) == value}
                 for test, skip in LEFT_TO_BROKEN.items() for name, values in skip.items() for value in values}
    assert all(in_lanes.values()), f"no broken adapter ran {[m for m, p in in_lanes.items() if not p]}"
    checked = {r["property"] for r in checks if r["adapter"] == "torch"}.union(*in_lanes.values())
    failed = {r["property"] for r in records if r["kind"] == "check" and not r["passed"]}
    never_failed = sorted(checked - failed - set(INFORMATIONAL) - set(NOT_BREAKABLE_HERE))
    assert not never_failed, f"checks no broken adapter makes fail (a test that cannot fail?): {never_failed}"


def test_real_adapter_loaded_by_path_passes(suite_run):
    proc, records = suite_run
    assert failed_properties(records, "torch") == set(), proc.stdout[-3000:]
    outcomes = [r for r in records if r["kind"] == "outcome" and r["adapter"] == "torch"]
    assert_ran_clean(outcomes, "the real torch adapter", at_least=40)


def test_outcome_records_carry_the_case_seconds(suite_run):
    """Each case's set-up plus call time is in its outcome record (the report's slowest cases read it)."""
    proc, records = suite_run
    outcomes = [r for r in records if r["kind"] == "outcome"]
    assert outcomes and all(isinstance(r.get("seconds"), float) and r["seconds"] >= 0 for r in outcomes), \
        [r for r in outcomes if not isinstance(r.get("seconds"), float)][:3]
    m = re.search(r" in ([0-9.]+)s", proc.stdout.strip().splitlines()[-1])
    assert m and sum(r["seconds"] for r in outcomes) <= float(m.group(1)) + 0.01, proc.stdout[-300:]
