"""The command line: subcommands with options before or after them, nonsense values as one line, and the module
layout behind it (one environment builder, groups in their own module, no runner/drift import cycle)."""

import ast
import re
import os
import subprocess
import sys

import pytest

from bnsuite import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bnsuite(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "bnsuite", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("argv, command, only, jobs, extra", [
    (["--jobs", "1", "drift", "--only", "pinned"], "drift", ["pinned"], 1, []),
    (["drift", "--jobs", "1", "--only", "pinned"], "drift", ["pinned"], 1, []),
    (["--only", "torch", "test", "--only", "torch", "--only", "meta"], "test", ["torch", "meta"], 2, []),
    (["matrix", "--jobs", "3", "--", "-k", "momentum"], "matrix", [], 3, ["-k", "momentum"]),
], ids=["options-before-drift", "options-after-drift", "only-repeated-once-each", "pytest-args-after-dashes"])
def test_options_before_or_after_the_command(argv, command, only, jobs, extra):
    a = cli.parse(argv)
    assert (a.command, a.only, a.jobs, a.pytest_args) == (command, only, jobs, extra), vars(a)


@pytest.mark.parametrize("args, message", [
    (["--jobs", "0", "matrix"], "argument --jobs: expected a whole number of at least 1, got '0'"),
    (["test", "--jobs", "-1"], "argument --jobs: expected a whole number of at least 1, got '-1'"),
    (["--jobs", "two", "drift"], "argument --jobs: expected a whole number of at least 1, got 'two'"),
    ([], "the following arguments are required: COMMAND"),
    (["matrx"], "invalid choice: 'matrx'"),
    (["groups", "--only", "torch"], "unrecognized arguments: --only torch"),
    (["--only", "nope", "drift"], "unknown release set 'nope'"),
    (["test", "--python", "/no/such/python"], "--python '/no/such/python': not an executable file"),
], ids=["jobs-0", "jobs-negative", "jobs-word", "no-command", "typo", "option-not-for-groups", "unknown-set",
        "missing-python"])
def test_nonsense_is_one_line(args, message, tmp_path):
    proc = bnsuite(*args, "--run-dir", str(tmp_path)) if args[:1] == ["test"] else bnsuite(*args)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], (proc.returncode, proc.stderr)
    assert proc.stdout == "", proc.stdout  # nothing ran


def test_version_is_the_package_version():
    """`--version` prints the one version (pyproject reads it from bnsuite.__version__)."""
    import bnsuite as pkg

    proc = bnsuite("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"bnsuite {pkg.__version__}", proc.stdout


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    names = set()
    for node in ast.walk(tree):  # inside functions too
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_runner_does_not_import_drift_and_one_environment_builder():
    pkg = os.path.join(ROOT, "bnsuite")
    runner = _imports(os.path.join(pkg, "runner.py"))
    assert not {"bnsuite.drift", "bnsuite.cli"} & runner, sorted(runner)
    for name in ("runner.py", "drift.py", "groups.py"):
        text = open(os.path.join(pkg, name), encoding="utf-8").read()
        assert "pip config" not in text and "configparser" not in text and "EnvBuilder" not in text, \
            f"{name} builds environments or reads pip's configuration itself: use bnsuite/envs.py"


def test_one_version_with_its_changelog_entry():
    import re

    import bnsuite as pkg

    pyproject = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.M) and 'attr = "bnsuite.__version__"' in pyproject
    assert not re.search(r'^version\s*=\s*"', pyproject, re.M), "pyproject must not state a second version"
    assert re.fullmatch(r"\d+\.\d+\.\d+", pkg.__version__), pkg.__version__
    changelog = open(os.path.join(ROOT, "CHANGELOG.md"), encoding="utf-8").read()
    first = re.search(r"^## (\d+\.\d+\.\d+)", changelog, re.M)
    assert first and first.group(1) == pkg.__version__, "CHANGELOG.md's newest entry must be the package's version"


def test_the_github_action_installs_runs_and_uploads():
    import yaml

    action = yaml.safe_load(open(os.path.join(ROOT, "action.yml"), encoding="utf-8"))
    assert {"adapter", "extras", "python"} <= set(action["inputs"]) and action["inputs"]["adapter"]["required"]
    assert action["runs"]["using"] == "composite"
    steps = action["runs"]["steps"]
    text = "\n".join(s.get("run", "") for s in steps)
    assert "GITHUB_ACTION_PATH" in text and 'python -m bnsuite matrix --adapter "$ADAPTER"' in text
    assert cli.parse(["matrix", "--adapter", "m:C", "--run-dir", "o/r", "--report", "o/i.html", "--", "-k", "x"])
    upload = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert upload and upload[0].get("if") == "always()", "the report is uploaded even when a case failed"
    assert steps[-1].get("if", "").startswith("steps.run.outputs.rc"), "the job fails after the upload, not before"
    extras = re.findall(r"^(\w+) = \[", pyproject_extras(), re.M)
    for word in ("torch", "keras", "tf", "flax", "all"):
        assert word in extras, f"the action documents the extra {word!r}, which pyproject lacks"


def pyproject_extras() -> str:
    text = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()
    return text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]


def test_own_adapter_is_a_group_of_its_own():
    from bnsuite import groups

    a = cli.parse(["test", "--adapter", "mypkg.bn:MyBN", "--adapter", "mypkg.bn:MyBN"])
    assert a.adapter == ["mypkg.bn:MyBN"]
    [(name, (env, args))] = groups.own(a.adapter)
    assert name == "mypkg.bn.MyBN" and args == ["bnsuite/suites", "--adapter", "mypkg.bn:MyBN"]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == os.getcwd(), "the adapter imports from where the user stands"


@pytest.mark.parametrize("args, message", [
    (["test", "--adapter", "nocolon"], "--adapter 'nocolon': expected 'package.module:ClassName'"),
    (["test", "--adapter", "m:C", "--only", "torch"], "--adapter runs your adapter as its own group"),
    (["drift", "--adapter", "m:C"], "--adapter runs your adapter as its own group"),
], ids=["not-a-ref", "with-only", "with-drift"])
def test_own_adapter_mistakes_are_one_line(args, message):
    proc = bnsuite(*args)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
