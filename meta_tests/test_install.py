"""`pip install <checkout>[torch]` gives a working bnsuite: the console script, the pytest plugin (entry point), and the
plug-in line, run from a folder OUTSIDE the checkout against an adapter defined there.

Slow (it builds a fresh virtual environment, constrained by the lock file): marked `slow`; deselect with -m "not slow".
Uses uv where it is on PATH (seconds), pip otherwise (a minute or two).
"""

import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from bnsuite import runner

ROOT = runner.ROOT

USER_ADAPTER = '''
"""A user's own BatchNorm adapter, outside the bnsuite checkout (here: torch's, under another id)."""
from bnsuite.adapters.torch_bn import TorchBatchNorm


class MyBN(TorchBatchNorm):
    id = "my-bn"
'''


def sh(cmd, cwd, env=None, timeout=900):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exit {proc.returncode}\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with `<checkout>[torch]` installed (not editable), and a user folder outside the checkout."""
    base = tmp_path_factory.mktemp("install")
    venv_dir = base / "venv"
    py = venv_dir / "bin" / "python"
    target = f"{ROOT}[torch]"
    uv = shutil.which("uv")
    if uv:
        sh([uv, "venv", "-q", "--python", sys.executable, str(venv_dir)], cwd=base)
        sh([uv, "pip", "install", "-q", "--python", str(py), "-c", runner.LOCK, *runner.uv_source_args(), target],
           cwd=base)
    else:
        sh([sys.executable, "-m", "venv", str(venv_dir)], cwd=base)
        sh([str(py), "-m", "pip", "install", "-q", "-c", runner.LOCK, target], cwd=base)
    user = base / "user"
    (user / "mypkg").mkdir(parents=True)
    (user / "mypkg" / "__init__.py").write_text("")
    (user / "mypkg" / "bn.py").write_text(USER_ADAPTER)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "KERAS_BACKEND", "TF_USE_LEGACY_KERAS", "BNSUITE_ADAPTER", "BNSUITE_RESULTS",
                        "BNSUITE_DEVICE", "BNSUITE_VENV", "BNSUITE_PYTHON")}
    env["PATH"] = f"{venv_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return venv_dir, user, env


@pytest.mark.slow
def test_plugin_line_runs_the_suite_from_outside_the_checkout(installed):
    venv_dir, user, env = installed
    # The plug-in line of docs/adding-an-adapter.md, run where the user's package is (the plugin resolves adapter
    # paths from the current directory too, as `python -m pytest` would).
    proc = sh([str(venv_dir / "bin" / "pytest"), "--pyargs", "bnsuite", "--adapter", "mypkg.bn:MyBN",
               "-p", "no:cacheprovider", "-q", "--results=out.jsonl"], cwd=user, env=env)
    last = proc.stdout.strip().splitlines()[-1]
    assert " passed" in last and "failed" not in last and "error" not in last, proc.stdout[-3000:]
    assert "my-bn" in proc.stdout, proc.stdout[-3000:]
    records = (user / "out.jsonl").read_text()
    assert '"adapter": "my-bn"' in records and '"kind": "check"' in records
    where = sh([str(venv_dir / "bin" / "python"), "-c", "import bnsuite; print(bnsuite.__file__)"], cwd=user, env=env)
    assert "site-packages" in where.stdout, where.stdout


@pytest.mark.slow
def test_console_script_runs_groups_with_the_current_interpreter(installed):
    venv_dir, user, env = installed
    groups = sh([str(venv_dir / "bin" / "bnsuite"), "groups"], cwd=user, env=env)
    assert "torch" in groups.stdout
    run = sh([str(venv_dir / "bin" / "bnsuite"), "test", "--only", "torch", "--", "-k", "test_defaults"], cwd=user,
             env=env)
    assert "torch" in run.stdout and "ok" in run.stdout, run.stdout
    assert list((user / "results").glob("*/torch.jsonl")), "results belong in the current directory"
    assert not (user / ".venv").exists(), "an installed bnsuite creates no environment"


@pytest.mark.slow
def test_checkout_run_with_bnsuite_also_installed(installed):
    """Entry point and the checkout's conftest name the same plugin: it registers once, no 'already registered'."""
    venv_dir, _, env = installed
    proc = sh([str(venv_dir / "bin" / "python"), "-m", "pytest", "bnsuite/suites/test_defaults.py", "--adapter",
               "torch", "-q", "-p", "no:cacheprovider", "--results=none"], cwd=ROOT, env=env)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    # every default case passed, none failed
    assert re.fullmatch(r"\d+ passed(, \d+ skipped)? in [\d.]+s", last), proc.stdout[-2000:]
    assert "already registered" not in proc.stdout + (proc.stderr or ""), proc.stdout[-2000:]


@pytest.mark.slow
def test_package_data_is_installed(installed):
    venv_dir, user, env = installed
    proc = sh([str(venv_dir / "bin" / "python"), "-c", textwrap.dedent("""
        import os, bnsuite.reports.render as r
        print(sorted(os.listdir(r.TEMPLATES)))
    """)], cwd=user, env=env)
    assert "report.html.j2" in proc.stdout
