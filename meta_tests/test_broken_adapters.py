"""The suites must FAIL on a broken adapter, on the property that names the breakage, and pass the real one.

All broken adapters (meta_tests/broken/, one module per semantic area) and the real torch adapter (loaded by path, as
a user's adapter would be) run in ONE pytest subprocess (meta_tests/broken_run.py); each test below then reads its
adapter's records from the results file. The real adapter runs every suite module but the lanes; each broken adapter
only the suite tests that can see its breakage (``seen_in``: the tests that write one of its expected properties,
plus its ``SEES`` entry), which keeps the run short while ``test_every_check_can_fail`` still covers every property
the suites check.
"""

import re

import pytest

from meta_tests import broken as ba, broken_run
from meta_tests.broken_run import LANE_MODULES, LEFT_TO_BROKEN, suite_literals, suite_tests_checking
from meta_tests.suite_outcomes import assert_ran_clean


@pytest.fixture(scope="module")
def suite_run():
    return broken_run.run()


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
