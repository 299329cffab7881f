"""Findings are declared once (bnsuite/findings.toml, loaded by bnsuite/findings.py) and everything else follows from
the declaration: the README's section, the failure message of a check that stops reproducing one, the report's list,
and a standalone reproduction per finding that exits 1 while the behaviour is present."""

from __future__ import annotations

import ast
import concurrent.futures
import glob
import os
import re
import subprocess
import sys
import time

import pytest

from bnsuite import findings
from bnsuite.adapters import registry
from bnsuite.suites import checks as ch
from bnsuite.suites.checks import Recorder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORK_MODULES = {"torch", "keras", "tensorflow", "tf_keras", "jax", "flax", "optax", "paddle", "tinygrad", "mlx"}
# The framework, NumPy and the standard library (a distributed reproduction needs a free port, ...); never bnsuite.
ALLOWED_IMPORTS = FRAMEWORK_MODULES | {"numpy", "ml_dtypes"} | set(sys.stdlib_module_names)
MAX_LINES = 45  # "about 40"
UPSTREAM_SECTIONS = ("# ", "## Minimal reproduction", "## Observed", "## Expected", "## Versions")


def test_declarations_are_well_formed():
    assert findings.validate() == []
    assert len(findings.FINDINGS) >= 10
    for f in findings.FINDINGS:
        unknown = set(f.adapters) - set(registry.BUILTIN)
        assert not unknown, f"finding {f.name}: unknown adapter ids {sorted(unknown)}"


VALID = """[[finding]]
name = "frozen_moves"
title = "t"
area = "freeze"
adapters = ["torch"]
versions = "torch 2.13.0"
severity = "high"
source = "s"
upstream = ""
properties = ["freeze_running_stats_update"]
"""


@pytest.mark.parametrize("edit, message", [
    (lambda t: t, None),
    (lambda t: t.replace("upstream =", "upstrem ="), "finding frozen_moves: unknown field 'upstrem'"),
    (lambda t: t.replace('severity = "high"\n', ""), "finding frozen_moves: missing field 'severity'"),
    (lambda t: t.replace('adapters = ["torch"]', 'adapters = "torch"'),
     "finding frozen_moves: field 'adapters' must be a list of strings"),
    (lambda t: t.replace('name = "frozen_moves"\n', ""), "finding #1 (no name): missing field 'name'"),
    (lambda t: t.replace("[[finding]]", "[[findings]]"), "unknown top-level keys ['findings']"),
    (lambda t: t.replace('title = "t"', 'title = "t'), "line 3"),
], ids=["valid", "typo", "missing", "type", "no_name", "table", "syntax"])
def test_a_malformed_declaration_fails_in_one_line_naming_finding_and_field(tmp_path, edit, message):
    path = tmp_path / "findings.toml"
    path.write_text(edit(VALID))
    if message is None:
        (f,) = findings.load(str(path))
        assert (f.upstream, f.adapters, f.where) == (None, ("torch",), ())  # "": not reported; lists are tuples
        return
    with pytest.raises(findings.FindingsError) as e:
        findings.load(str(path))
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_every_demonstrating_property_exists_in_the_code():
    """A renamed property would silently orphan a finding: every property a finding names is written whole, as a
    string literal, somewhere in bnsuite/ (a suite's check or an adapter's declared probe)."""
    text = "".join(open(p, encoding="utf-8").read() for p in glob.glob(os.path.join(ROOT, "bnsuite", "**", "*.py"),
                                                                         recursive=True)
                   if not p.endswith("findings.py"))
    for f in findings.FINDINGS:
        missing = [p for p in f.properties if f'"{p}"' not in text]
        assert not missing, f"finding {f.name} names properties no code checks: {missing}"


def test_a_check_that_stops_reproducing_a_finding_names_it():
    f = next(x for x in findings.FINDINGS if x.name == "torch_freeze_idioms_update_running_stats")
    rec = Recorder(None, test="bnsuite/suites/test_freeze.py::test_freeze_idiom[torch-cpu-float32-requires_grad_false]",
                   adapter="torch", device="cpu", dtype="float32", repro="")
    with pytest.raises(AssertionError, match=f"demonstrates finding {f.name}"):
        ch.equal(rec, "freeze_running_stats_update", True, False)  # as if torch had fixed it
    assert f"demonstrates finding {f.name}" in rec.checks[-1]["message"]  # the results file says it too
    # a check of another idiom (eval) or another adapter does not claim the finding
    other = Recorder(None, test="t[torch-cpu-float32-eval]", adapter="torch", device="cpu", dtype="float32", repro="")
    with pytest.raises(AssertionError) as e:
        ch.equal(other, "freeze_running_stats_update", False, True)
    assert "demonstrates finding" not in str(e.value)


def test_readme_section_is_generated_from_the_declarations():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    assert findings.rewrite_readme(text) == text, \
        "README.md's findings section is out of date: run python3 -m bnsuite.findings --readme"
    for f in findings.FINDINGS:
        assert f.reproduction in text and f.title in text


@pytest.mark.parametrize("finding", findings.FINDINGS, ids=lambda f: f.name)
def test_reproduction_is_standalone(finding):
    path = os.path.join(ROOT, finding.reproduction)
    assert os.path.exists(path), f"finding {finding.name} has no reproduction {finding.reproduction}"
    source = open(path, encoding="utf-8").read()
    assert len(source.splitlines()) <= MAX_LINES, f"{finding.reproduction}: longer than {MAX_LINES} lines"
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= ALLOWED_IMPORTS, f"{finding.reproduction} imports {sorted(imported - ALLOWED_IMPORTS)}"
    assert imported & FRAMEWORK_MODULES, f"{finding.reproduction} imports no framework"
    assert "default_rng(" in source or "PRNGKey(" in source, f"{finding.reproduction}: no seeded input"
    assert "sys.exit(2)" in source and "observed" in source and "expected" in source


@pytest.mark.parametrize("finding", [f for f in findings.FINDINGS if f.upstream is None], ids=lambda f: f.name)
def test_unreported_findings_have_an_upstream_draft(finding):
    path = os.path.join(ROOT, finding.upstream_report)
    assert os.path.exists(path), f"finding {finding.name} has no upstream report draft {finding.upstream_report}"
    text = open(path, encoding="utf-8").read()
    for section in UPSTREAM_SECTIONS:
        assert re.search(rf"^{re.escape(section)}", text, re.M), f"{finding.upstream_report}: no '{section}' section"


def _run_reproduction(f: findings.Finding) -> tuple[findings.Finding, subprocess.CompletedProcess | str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS")}
    env.update(registry.load(f.reproduce_with or f.adapters[0]).process_env)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, f.reproduction], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=240)
    except subprocess.TimeoutExpired:
        return f, "timed out after 240 s", time.perf_counter() - t0
    return f, proc, time.perf_counter() - t0


@pytest.fixture(scope="module")
def reproduction_runs():
    """Every reproduction in its own process and environment, several at a time (each imports a framework)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        return {f.name: (proc, secs) for f, proc, secs in pool.map(_run_reproduction, findings.FINDINGS)}


# Every findings/<name>.py imports its framework (1.5 to 3 minutes in all on 2 cores): the test command runs them, the
# main job (matrix) leaves them out with the other slow meta tests.
@pytest.mark.slow
@pytest.mark.reproductions
@pytest.mark.parametrize("finding", findings.FINDINGS, ids=lambda f: f.name)
def test_reproduction_shows_the_behaviour(finding, reproduction_runs):
    proc, secs = reproduction_runs[finding.name]
    assert not isinstance(proc, str), f"{finding.reproduction}: {proc}"
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, (f"{finding.reproduction} exited {proc.returncode} (1: behaviour present, 0: gone, "
                                  f"2: error) after {secs:.1f} s; finding {finding.name} may be fixed\n{out[-2000:]}")
    assert re.search(r"^observed", proc.stdout, re.M) and re.search(r"^expected", proc.stdout, re.M), out[-2000:]


def test_failure_script_makes_the_cases_input():
    """A failing check carries a standalone script: the layer, and the case's input made from its seed (the same
    arrays the suite used), never a dump."""
    import numpy as np

    from bnsuite.adapters.base import Spec
    from bnsuite.suites import data

    for rank, last, dtype in ((2, False, "float32"), (4, True, "float64"), (5, False, "float16")):
        spec = Spec(rank=rank, channels_last=last, dtype=dtype)
        ns: dict = {}
        exec(data.recipe(spec), ns)
        assert np.array_equal(np.asarray(ns["x"], np.float64), data.batch(spec))
        st = data.state(spec)
        for name in ("scale", "offset", "mean", "var"):
            assert np.array_equal(data.representable(ns[name], dtype), getattr(st, name)), name
    rec = Recorder(None, test="t[torch-cpu-float32]", adapter="torch", device="cpu", dtype="float32", repro="")
    rec.snippet, rec.layer_code = "import torch\nbn = torch.nn.BatchNorm2d(3)", data.recipe(Spec(rank=4))
    with pytest.raises(AssertionError):
        ch.equal(rec, "default_eps", 1e-5, 1e-3)
    script = rec.checks[-1]["script"]
    assert "default_rng(0)" in script and "BatchNorm2d" in script and "observed" in script and "declared" in script
