"""Bad input gets one clear line and a non-zero exit, never a traceback."""

import os
import subprocess
import sys

import pytest

from bnsuite import groups

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_run(*args):
    return subprocess.run([sys.executable, "-m", "pytest", "bnsuite/suites", "-q", "-p", "no:cacheprovider",
                           "--results=none", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--adapter", "no-such-adapter"], "unknown adapter 'no-such-adapter'"),
    (["--adapter", "no_such_pkg.mod:Cls"], "cannot import module 'no_such_pkg.mod'"),
    (["--adapter", "bnsuite.adapters.torch_bn:Nope"], "has no attribute 'Nope'"),
    (["--adapter", "bnsuite.adapters.base:Spec"], "is not a subclass of bnsuite.adapters.base.BatchNormAdapter"),
    (["--device", "tpu"], "unknown device 'tpu'"),
], ids=["unknown-id", "bad-module", "bad-attribute", "not-an-adapter", "unknown-device"])
def test_bad_selection_is_one_clear_line(args, message):
    proc = pytest_run(*args)
    assert proc.returncode == 4, (proc.returncode, proc.stderr)
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr


def test_env_var_selects_adapter_too():
    env = {**os.environ, "BNSUITE_ADAPTER": "no-such-adapter"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "bnsuite/suites", "-q", "--results=none"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 4 and "unknown adapter" in proc.stderr


def test_runner_rejects_unknown_group():
    proc = subprocess.run([sys.executable, "-m", "bnsuite", "matrix", "--only", "nope"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    names = ", ".join(name for name, _ in groups.for_command("matrix"))
    assert proc.stderr.strip() == f"bnsuite: error: unknown group 'nope': use one of {names}"
