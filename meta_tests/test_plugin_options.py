"""The plugin's process-level options: Hypothesis profiles, pytest-xdist, default devices, the skip summary, and no
results file where no bnsuite case ran."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from bnsuite import plugin_options as opts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROFILE_PROBE = '''
from hypothesis import settings

def test_profile():
    d = settings.default
    print("PROFILE", settings.get_current_profile_name(), d.max_examples, d.derandomize)
'''


def clean_env(**extra):
    # CI and TF_BUILD make Hypothesis start on its own "ci" profile: left out, so these runs see the same defaults on
    # a developer's machine and in CI.
    env = {k: v for k, v in os.environ.items()
           if k not in ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS", opts.HYPOTHESIS_ENV, "BNSUITE_DEVICE",
                        "BNSUITE_RESULTS", "BNSUITE_ADAPTER", "CI", "TF_BUILD")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


def outside_run(tmp_path, *args, env=None):
    """pytest with the bnsuite plugin on a probe test in a folder outside the checkout."""
    (tmp_path / "test_probe.py").write_text(PROFILE_PROBE)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "bnsuite.plugin", "-p", "no:cacheprovider", "-s",
                           "-q", "test_probe.py", *args], cwd=tmp_path, env=env or clean_env(), capture_output=True,
                          text=True, timeout=120)


def profile_line(proc):
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROFILE ")]
    assert lines, proc.stdout + proc.stderr
    return lines[0].split()[1:]


@pytest.mark.parametrize("how", ["option", "env"])
def test_hypothesis_profile_is_honoured(tmp_path, how):
    if how == "option":
        proc = outside_run(tmp_path, "--hypothesis-profile=explore")
    else:
        proc = outside_run(tmp_path, env=clean_env(**{opts.HYPOTHESIS_ENV: "explore"}))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert profile_line(proc) == ["explore", "200", "False"]


def test_option_wins_over_env(tmp_path):
    proc = outside_run(tmp_path, "--hypothesis-profile=ci", env=clean_env(**{opts.HYPOTHESIS_ENV: "explore"}))
    assert profile_line(proc) == ["ci", "12", "True"]


def test_other_projects_keep_their_hypothesis_default(tmp_path):
    """The installed plugin loads in every pytest run of its environment: it must not derandomize other tests."""
    proc = outside_run(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert profile_line(proc)[0] == "default"
    assert not (tmp_path / "results").exists(), "a run with no bnsuite case wrote a results file"


@pytest.mark.parametrize("args, env, message", [
    (["--hypothesis-profile=nope"], {}, "--hypothesis-profile='nope': unknown Hypothesis profile"),
    ([], {opts.HYPOTHESIS_ENV: "nope"}, "BNSUITE_HYPOTHESIS='nope': unknown Hypothesis profile"),
], ids=["option", "env"])
def test_unknown_profile_is_one_line(tmp_path, args, env, message):
    proc = outside_run(tmp_path, *args, env=clean_env(**env))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr


@pytest.mark.skipif(importlib.util.find_spec("xdist") is None, reason="pytest-xdist not installed in this environment")
def test_xdist_is_refused_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "pytest", "bnsuite/suites/test_defaults.py", "--adapter", "torch",
                           "-n", "2", "-p", "no:cacheprovider"], cwd=ROOT, env=clean_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert proc.stderr.strip() == f"ERROR: {opts.XDIST_REFUSAL}"


def collect(*args):
    proc = subprocess.run([sys.executable, "-m", "pytest", "bnsuite/suites/test_defaults.py", "--collect-only", "-q",
                           "-p", "no:cacheprovider", *args], cwd=ROOT, env=clean_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line for line in proc.stdout.splitlines() if "::" in line]


@pytest.mark.skipif(opts.gpu_hardware_present(), reason="this machine has a GPU driver: GPU cases are parametrized")
def test_gpu_cases_are_not_parametrized_where_no_gpu_can_be():
    default = collect("-k", "torch")
    assert default and not [i for i in default if "-gpu-" in i], default
    asked = collect("-k", "torch", "--device", "cpu", "--device", "gpu")
    assert [i for i in asked if "-gpu-" in i], "--device gpu must still list the GPU cases (as skips)"


@pytest.mark.skipif(opts.gpu_hardware_present(), reason="this machine has a GPU driver: GPU cases may run")
def test_skip_summary_counts_no_gpu_and_lists_the_rest():
    # keras-torch cannot run without KERAS_BACKEND=torch: a real skip that must stay visible.
    proc = subprocess.run([sys.executable, "-m", "pytest", "bnsuite/suites/test_defaults.py", "--adapter", "torch",
                           "--adapter", "keras-torch", "--device", "cpu", "--device", "gpu", "--results=none",
                           "-p", "no:cacheprovider", "-q"], cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    # each torch CPU case has a GPU twin that skips; keras-torch's CPU and GPU cases all skip for their backend
    passed = int(re.search(r"(\d+) passed", out).group(1))
    assert f"{passed} skipped: no GPU visible" in out, out
    assert f"{2 * passed} skipped for other reasons:" in out, out
    assert "x Skipped: keras-torch: " in out.split("skipped for other reasons:")[1], out


def test_skip_summary_lines():
    from collections import Counter

    lines = opts.skip_summary_lines(Counter({"torch: no GPU visible to torch (x)": 5,
                                             "flax-nnx: no GPU visible to JAX (y)": 2, "dtype float16 not declared": 1}))
    assert lines == ["  7 skipped: no GPU visible", "  1 skipped for other reasons:",
                     "       1 x dtype float16 not declared"]
