"""The GitHub Actions workflow is correct by construction: every group runs on CPU, the GPU job installs GPU builds,
proves each framework sees the GPU, runs only the adapter groups, never for forks, and cannot hold the report back;
installs come from the lock files. Plus actionlint where it is installed."""

import os
import re
import shutil
import subprocess

import pytest
import yaml

from bnsuite import runner

ROOT = runner.ROOT
WORKFLOW = os.path.join(ROOT, ".github", "workflows", "conformance.yml")


@pytest.fixture(scope="module")
def wf():
    with open(WORKFLOW, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def runs(job) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_permissions_and_concurrency(wf):
    assert wf["permissions"] == {"contents": "read"}
    assert "github.ref" in wf["concurrency"]["group"] and wf["concurrency"]["cancel-in-progress"] is True


def test_cpu_matrix_runs_every_group_from_the_lock_with_cpu_torch(wf):
    job = wf["jobs"]["cpu"]
    assert set(job["strategy"]["matrix"]["env"]) == set(runner.GROUPS) | {"meta", "meta-slow"}
    assert job["env"]["PIP_EXTRA_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert "torch==2.13.0+cpu" in open(runner.LOCK).read(), "the lock must pin torch's CPU build"
    setup = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python"))
    assert setup["with"]["cache"] == "pip" and "requirements/lock.txt" in setup["with"]["cache-dependency-path"]
    assert any(".cache/jax" in str(s.get("with", {}).get("path", "")) for s in job["steps"]), "no JAX cache"


def test_gpu_job_is_correct_by_construction(wf):
    job = wf["jobs"]["gpu"]
    cond = job["if"]
    assert "vars.HAS_GPU_RUNNER" in cond, "without a GPU runner the job must be skipped, not queued for a day"
    assert "head.repo.full_name == github.repository" in cond, "no self-hosted run for pull requests from forks"
    text = runs(job)
    assert "requirements/gpu-lock.txt" in text and "requirements/lock.txt" not in text and "all.txt" not in text
    names = [s.get("name", "") for s in job["steps"]]
    assert_step = next(i for i, s in enumerate(job["steps"]) if ".ci/assert-gpu" in s.get("run", ""))
    run_step = next(i for i, s in enumerate(job["steps"]) if "bnsuite test" in s.get("run", ""))
    assert assert_step < run_step, names
    only = re.findall(r"--only (\S+)", job["steps"][run_step]["run"])
    assert set(only) == set(runner.GROUPS), f"the GPU job runs {only}: every adapter group, not the meta tests"
    assert "-m gpu" not in text and job["env"]["BNSUITE_DEVICE"] == "gpu"
    gpu_req = open(os.path.join(ROOT, "requirements", "gpu.txt")).read()
    assert "tensorflow[and-cuda]" in gpu_req and "jax[cuda" in gpu_req and "tensorflow-cpu" not in gpu_req


def test_report_never_waits_on_a_missing_gpu(wf):
    job = wf["jobs"]["report"]
    assert set(job["needs"]) == {"cpu", "gpu"}
    assert "cancelled()" in job["if"] or "always()" in job["if"]
    assert "timeout-minutes" in job


def test_every_job_has_a_timeout(wf):
    for name, job in wf["jobs"].items():
        assert job.get("timeout-minutes"), f"job {name} has no timeout"


@pytest.mark.skipif(shutil.which("actionlint") is None,
                    reason="actionlint not installed (its PyPI package downloads the binary from GitHub at build)")
def test_actionlint():
    proc = subprocess.run(["actionlint", WORKFLOW], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tox_installs_as_the_main_job_does():
    import configparser

    cp = configparser.ConfigParser(interpolation=None)
    cp.read(os.path.join(ROOT, "tox.ini"))
    assert "-c requirements/lock.txt" in cp["testenv"]["deps"], "tox installs must be constrained by the lock"
    for name in runner.GROUPS:
        section = cp[f"testenv:{name}"]
        assert section.get("labels"), f"tox env {name} has no label (tox -m <family>)"
        deps = section.get("deps", "").replace("{[testenv:tf_keras]deps}", cp["testenv:tf_keras"]["deps"])
        assert "tf_keras" not in deps, f"{name}: tf_keras in deps would pull the full tensorflow"
        if "tf" in name:
            pre = section.get("commands_pre", "")
            if "{[testenv:tf_keras]commands_pre}" in pre:
                pre = cp["testenv:tf_keras"]["commands_pre"]
            assert "--no-deps" in pre and "requirements/nodeps.txt" in pre, f"{name}: tf_keras not installed --no-deps"
