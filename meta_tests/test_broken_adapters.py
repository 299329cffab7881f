"""The suites must FAIL on a broken adapter, on the property that names the breakage, and pass the real one.

All broken adapters and the real torch adapter (loaded by path, as a user's adapter would be) run in ONE pytest
subprocess over the whole suite; each test below then reads its adapter's records from the results file.
"""

import json
import os
import subprocess
import sys

import pytest

from meta_tests import broken_adapters as ba

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL = "adapters.torch_bn:TorchBatchNorm"


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("broken") / "results.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS")}
    refs = [REAL] + [f"meta_tests.broken_adapters:{cls.__name__}" for cls in ba.EXPECTED_FAILURES]
    cmd = [sys.executable, "-m", "pytest", "suites", "-q", "-p", "no:cacheprovider", "--device", "cpu",
           f"--results={results}"]
    for ref in refs:
        cmd += ["--adapter", ref]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    records = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    return proc, records


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


def test_real_adapter_loaded_by_path_passes(suite_run):
    proc, records = suite_run
    assert failed_properties(records, "torch") == set(), proc.stdout[-3000:]
    outcomes = [r for r in records if r["kind"] == "outcome" and r["adapter"] == "torch"]
    bad = [r["test"] for r in outcomes if r["outcome"] in ("failed", "error")]
    assert not bad, f"the real torch adapter failed: {bad[:5]}"
    passed = [r for r in outcomes if r["outcome"] == "passed"]
    assert len(passed) >= 40, f"only {len(passed)} torch cases passed"
