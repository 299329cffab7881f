"""The plug-in path as a new user walks it: a plain-NumPy BatchNorm with only the four required adapter methods
(meta_tests/minimal_numpy_adapter.py) runs through the WHOLE suite with no failure and no error; every case it cannot
run skips and names the capability it lacks."""

import json
import os
import subprocess
import sys

import pytest

from meta_tests.suite_outcomes import assert_ran_clean

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REF = "meta_tests.minimal_numpy_adapter:MinimalNumpyBatchNorm"
ID = "numpy-minimal"


@pytest.fixture(scope="module")
def minimal_records(tmp_path_factory):
    results = tmp_path_factory.mktemp("minimal") / "results.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS")}
    cmd = [sys.executable, "-m", "pytest", "bnsuite/suites", "-q", "-p", "no:cacheprovider", "--device", "cpu",
           f"--results={results}", "--adapter", REF]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    records = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    return proc, records


@pytest.fixture(scope="module")
def minimal_run(minimal_records):
    proc, records = minimal_records
    return proc, [r for r in records if r["kind"] == "outcome" and r["adapter"] == ID]


def test_minimal_adapter_has_only_the_core_methods():
    from meta_tests.minimal_numpy_adapter import MinimalNumpyBatchNorm

    own = {name for name in vars(MinimalNumpyBatchNorm) if not name.startswith("_")}
    assert own == {"id", "declare", "forward", "get_state", "set_state"}, own


def test_whole_suite_passes_or_skips_on_minimal_adapter(minimal_run):
    proc, outcomes = minimal_run
    assert proc.returncode == 0, f"pytest exit {proc.returncode}\n{proc.stdout[-3000:]}"
    assert_ran_clean(outcomes, "the minimal adapter", at_least=30)


def test_minimal_adapter_skips_name_the_missing_capability(minimal_run):
    _, outcomes = minimal_run
    skipped = [r for r in outcomes if r["outcome"] == "skipped"]
    assert skipped, "the minimal adapter lacks backward, hyperparameters, ...: some cases must skip"
    vague = [(r["test"], r["reason"]) for r in skipped if ID not in r["reason"]]
    assert not vague, f"skips that do not say what the adapter lacks: {vague[:5]}"
    reasons = " ".join(r["reason"] for r in skipped)
    for capability in ("backward not implemented", "hyperparameters() not implemented", "declares no freeze idioms",
                       "no 'norms' capability", "no 'network' capability", "no 'edge_facts' capability"):
        assert capability in reasons, f"no skip names {capability!r}"


def test_every_case_of_the_minimal_adapter_is_its_own_and_says_so_once(minimal_records, minimal_run):
    """No case without an adapter (pytest's anonymous "got empty parameter set"), no reason naming the adapter twice."""
    _, outcomes = minimal_run
    anonymous = [(r["test"], r["reason"]) for r in minimal_records[1]
                 if r["kind"] == "outcome" and "got empty parameter set" in r["reason"]]
    assert not anonymous, f"pytest's anonymous skips (a parametrization that left the adapter out): {anonymous[:5]}"
    doubled = [(r["test"], r["reason"]) for r in outcomes if f"{ID}: {ID}:" in r["reason"]]
    assert not doubled, f"skip reasons naming the adapter twice: {doubled[:5]}"
