"""The suites must FAIL on a broken adapter, on the property that names the breakage; and pass the real one."""

import json
import os
import subprocess
import sys

import pytest

from meta_tests import broken_adapters as ba

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_suites(adapter_ref: str, tmp_path, *extra: str):
    results = tmp_path / "results.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "suites", "-q", "-p", "no:cacheprovider", "--device", "cpu",
         "--adapter", adapter_ref, f"--results={results}", *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    records = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    return proc, records


def failed_properties(records):
    return {r["property"] for r in records if r["kind"] == "check" and not r["passed"]}


@pytest.mark.parametrize("broken", list(ba.EXPECTED_FAILURES), ids=lambda c: c.id)
def test_suite_fails_on_broken_adapter(broken, tmp_path):
    expected = ba.EXPECTED_FAILURES[broken]
    proc, records = run_suites(f"meta_tests.broken_adapters:{broken.__name__}", tmp_path)
    failed = failed_properties(records)
    assert proc.returncode == 1, f"{broken.id}: pytest exit {proc.returncode}, expected 1 (tests failed)\n{proc.stdout[-2000:]}"
    missing = expected - failed
    assert not missing, f"{broken.id}: the suites did not fail on {sorted(missing)}; they failed on {sorted(failed)}"


def test_real_adapter_loaded_by_path_passes(tmp_path):
    proc, records = run_suites("adapters.torch_bn:TorchBatchNorm", tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert failed_properties(records) == set()
    passed = [r for r in records if r["kind"] == "outcome" and r["outcome"] == "passed"]
    assert len(passed) >= 40, f"only {len(passed)} torch cases passed"
