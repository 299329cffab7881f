"""Findings are declared once (bnsuite/findings.toml, loaded by bnsuite/findings.py) and everything else follows from
the declaration: the README's table and docs/findings-list.md, the failure message of a check that stops reproducing
one, the report's list, and a standalone reproduction per finding that exits 1 while the behaviour is present."""

from __future__ import annotations

import ast
import concurrent.futures
import dataclasses
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
from bnsuite.adapters.frameworks import framework_modules
from meta_tests import script_forks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORK_MODULES = {"torch", "torchao", "keras", "tensorflow", "tf_keras", "jax", "flax", "optax", "paddle", "tinygrad",
                     # exporters and runtimes of the deploy lane (a deploy finding reproduces with them)
                     "onnx", "onnxruntime", "onnxscript", "openvino", "ai_edge_litert", "tf2onnx", "jax2onnx"}
# Every built-in adapter's framework, from its framework row (a new adapter's reproductions need nothing here).
FRAMEWORK_MODULES |= {m for m in framework_modules() if m.isidentifier()}
# The framework, NumPy and the standard library (a distributed reproduction needs a free port, ...); never bnsuite.
ALLOWED_IMPORTS = FRAMEWORK_MODULES | {"numpy", "ml_dtypes"} | set(sys.stdlib_module_names)
MAX_LINES = 45  # "about 40"
# A draft follows an upstream tracker's bug template: versions, an inline reproduction, expected (with what says so),
# actual, why it matters.
UPSTREAM_SECTIONS = ("# ", "## Versions", "## Reproduction", "## Expected", "## Actual", "## Why it matters")
MAX_DRAFT_SNIPPET = 25  # "a minimal reproduction of at most ~20 lines", inline
REPRODUCTION_TIMEOUT = 240


def test_declarations_are_well_formed():
    assert findings.validate() == []
    assert len(findings.FINDINGS) >= 10
    for f in findings.FINDINGS:
        unknown = set(f.adapters) - set(registry.BUILTIN)
        assert not unknown, f"finding {f.name}: unknown adapter ids {sorted(unknown)}"


VALID = """[[finding]]
name = "frozen_moves"
title = "t"
kind = "bug"
area = "freeze"
adapters = ["torch"]
versions = "torch 2.13.0"
severity = "high"
source = "s"
status = "not-reported"
upstream = ""
searched = "pytorch/pytorch issues: 'frozen moves'"
searched_on = "2026-12-06"
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
        assert f.upstream_report == "findings/frozen_moves.upstream.md" and "Searched 2026-12-06" in f.status_text
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
    with open(os.path.join(ROOT, *findings.LIST_PAGE.split("/")), encoding="utf-8") as fh:
        page = fh.read()
    assert findings.rewrite_readme(text) == text, \
        "README.md's findings section is out of date: run python3 -m bnsuite.findings --readme"
    assert page == findings.findings_page(), \
        f"{findings.LIST_PAGE} is out of date: run python3 -m bnsuite.findings --readme"
    for f in findings.FINDINGS:
        assert f"[`{f.name}`]({findings.LIST_PAGE}#{f.name})" in text, f"README.md's table lacks {f.name}"
        assert f.reproduction in page and f.title in page and f'<a id="{f.name}">' in page, \
            f"{findings.LIST_PAGE} lacks {f.name}'s title, anchor or reproduction"


def _imports(node) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name.split(".")[0] for a in node.names}
    if isinstance(node, ast.ImportFrom):
        return {(node.module or "").split(".")[0]}
    return set()


def _exits_2(handler: ast.ExceptHandler) -> bool:
    return any(isinstance(n, ast.Call) and ast.unparse(n) == "sys.exit(2)" for n in ast.walk(handler))


def _structure_problems(source: str, shown: str) -> list[str]:
    """What keeps a reproduction's source from being standalone: imports beyond the framework, NumPy and the standard
    library; an import outside the standard library that is not in a top-level try whose handler exits 2 (a missing
    framework would exit 1 and read as "behaviour present"); no 'versions: ...' print in that try; no seeded input."""
    problems = []
    if len(source.splitlines()) > MAX_LINES:
        problems.append(f"{shown}: longer than {MAX_LINES} lines")
    tree = ast.parse(source)
    imported = set().union(*(_imports(n) for n in ast.walk(tree)))
    if not imported <= ALLOWED_IMPORTS:
        problems.append(f"{shown} imports {sorted(imported - ALLOWED_IMPORTS)}")
    if not imported & FRAMEWORK_MODULES:
        problems.append(f"{shown} imports no framework")
    guarded = [n for n in tree.body if isinstance(n, ast.Try) and n.handlers and all(map(_exits_2, n.handlers))]
    inside = {id(n) for t in guarded for b in t.body for n in ast.walk(b)}
    outside = sorted({m for n in ast.walk(tree) if id(n) not in inside for m in _imports(n)}
                     - set(sys.stdlib_module_names))
    if outside:
        problems.append(f"{shown} imports {outside} outside a top-level try whose handler exits 2: a missing package "
                        "would exit 1 and read as 'behaviour present'")
    if not [n for t in guarded for n in ast.walk(t) if isinstance(n, ast.Call) and ast.unparse(n.func) == "print"
            and ast.unparse(n).startswith(("print(f'versions: ", 'print(f"versions: '))]:
        problems.append(f"{shown}: prints no 'versions: ...' line inside its guarded try")
    if "default_rng(" not in source and "PRNGKey(" not in source:
        problems.append(f"{shown}: no seeded input")
    if "observed" not in source or "expected" not in source:
        problems.append(f"{shown}: prints no observed and expected values")
    return problems


@pytest.mark.parametrize("finding", findings.FINDINGS, ids=lambda f: f.name)
def test_reproduction_is_standalone(finding):
    path = os.path.join(ROOT, finding.reproduction)
    assert os.path.exists(path), f"finding {finding.name} has no reproduction {finding.reproduction}"
    assert _structure_problems(open(path, encoding="utf-8").read(), finding.reproduction) == []


GOOD_SCRIPT = """import sys
try:
    import numpy as np
    import torch
    print(f"versions: torch {torch.__version__}")
    x = np.random.default_rng(0).standard_normal(3)
except Exception as e:
    print(f"error: {e}")
    sys.exit(2)
print("observed", x, "expected")
sys.exit(1)
"""


@pytest.mark.parametrize("edit, problem", [
    (lambda s: s, None),
    (lambda s: "import torch\n" + s, "imports ['torch'] outside a top-level try"),
    (lambda s: s.replace("sys.exit(2)", "sys.exit(1)"), "imports ['numpy', 'torch'] outside a top-level try"),
    (lambda s: s.replace('    print(f"versions: torch {torch.__version__}")\n', ""), "prints no 'versions: ...'"),
    (lambda s: s.replace("import torch", "import pandas"), "imports ['pandas']"),
], ids=["good", "import_outside_try", "handler_exits_1", "no_versions", "foreign_import"])
def test_the_structure_check_catches_a_broken_script(edit, problem):
    problems = _structure_problems(edit(GOOD_SCRIPT), "findings/x.py")
    assert (problems == []) if problem is None else any(problem in p for p in problems), problems


@pytest.fixture(scope="module")
def blocked_frameworks(tmp_path_factory):
    """A PYTHONPATH entry whose packages shadow every framework (and NumPy, so each run costs only an interpreter
    start) with one that raises ImportError."""
    root = tmp_path_factory.mktemp("blocked")
    for name in FRAMEWORK_MODULES | {"numpy"}:
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked by the meta test')\n")
    return str(root)


@pytest.mark.parametrize("finding", findings.FINDINGS, ids=lambda f: f.name)
def test_reproduction_without_its_framework_exits_2_in_one_line(finding, blocked_frameworks):
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS")}
    env["PYTHONPATH"] = blocked_frameworks
    proc = subprocess.run([sys.executable, finding.reproduction], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    out = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2 and len(out) == 1 and "blocked by the meta test" in out[0], (
        f"{finding.reproduction} without its framework exited {proc.returncode} with {len(out)} lines (expected 2, "
        f"one line):\n" + "\n".join(out[-10:]))


def test_declaration_rules():
    """The kind decides what a finding carries: a quote of the documentation for the non-bugs, a draft only for a bug
    with nothing open or fixed upstream; a fixed status names its commit."""
    for f in findings.FINDINGS:
        if f.kind != "bug":
            assert f.documentation and f.upstream_report is None, f.name
        assert (f.upstream_report is not None) == (f.kind == "bug" and f.status in findings.DRAFTED), f.name
        assert f.searched in f.status_text and f.searched_on in f.status_text, f.name
    drafts = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "findings", "*.upstream.md"))}
    wanted = {os.path.basename(f.upstream_report) for f in findings.FINDINGS if f.upstream_report}
    assert drafts == wanted, (f"drafts without a drafted bug: {sorted(drafts - wanted)}; "
                              f"missing: {sorted(wanted - drafts)}")


def test_a_released_fix_is_seen_in_the_installed_versions():
    f = next(x for x in findings.FINDINGS if x.status == "fixed-unreleased")
    assert f.fixed_by and not f.fixed_in and not findings.fix_installed(f, {"keras": "99.0.0"})
    released = dataclasses.replace(f, status="fixed-released", fixed_in="keras 3.16.0")
    assert findings.fix_installed(released, {"keras": "3.16.0"}) and findings.fix_installed(released, {"keras": "3.17"})
    assert not findings.fix_installed(released, {"keras": "3.15.1"}) and not findings.fix_installed(released, {})


@pytest.mark.parametrize("finding", [f for f in findings.FINDINGS if f.upstream_report], ids=lambda f: f.name)
def test_bug_drafts_read_as_reports(finding):
    """A draft for its tracker's template: versions, a short inline reproduction (never the whole script), expected
    with what says so, actual, why it matters; the related upstream issues cited; the title not repeated."""
    path = os.path.join(ROOT, finding.upstream_report)
    assert os.path.exists(path), f"finding {finding.name} has no upstream report draft {finding.upstream_report}"
    text = open(path, encoding="utf-8").read()
    for section in UPSTREAM_SECTIONS:
        assert re.search(rf"^{re.escape(section)}", text, re.M), f"{finding.upstream_report}: no '{section}' section"
    code = re.findall(r"```python\n(.*?)```", text, re.S)
    assert code and all(len(c.splitlines()) <= MAX_DRAFT_SNIPPET for c in code), \
        f"{finding.upstream_report}: the reproduction is an inline python block of at most {MAX_DRAFT_SNIPPET} lines"
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), "")
    assert title and text.count(title) == 1, f"{finding.upstream_report}: the title is repeated in the body"
    assert "What happens" not in text and "sys.exit" not in text, f"{finding.upstream_report}: pasted boilerplate"
    for ref in re.findall(r"[\w.-]+/[\w.-]+#\d+", finding.upstream or ""):
        assert ref.split("/")[-1] in text or ref in text, f"{finding.upstream_report}: does not cite {ref}"


def _reproduction_env(f: findings.Finding) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS")}
    env.update(registry.load(f.reproduce_with or f.adapters[0]).process_env)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # One core's worth of threads each: the pool already runs one reproduction per core, and framework thread pools
    # sized to every core (OpenMP, TensorFlow's intra- and inter-op pools) would only spin against their neighbours.
    # Set, not defaulted: the runner gives a group cores // jobs threads, and more than one would also let NumPy's
    # OpenBLAS start its pool at import, so the fork servers would refuse to fork.
    for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        env[var] = "1"
    return env


def _run_reproduction(f: findings.Finding) -> tuple[findings.Finding, subprocess.CompletedProcess | str, float]:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, f.reproduction], cwd=ROOT, env=_reproduction_env(f), capture_output=True,
                              text=True, timeout=REPRODUCTION_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f, f"timed out after {REPRODUCTION_TIMEOUT} s", time.perf_counter() - t0
    return f, proc, time.perf_counter() - t0


def _imported_modules(path: str) -> list[str]:
    """Every module a script imports, dotted names with their parents, in the order written."""
    out: dict[str, None] = {}
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        for name in names:
            parts = name.split(".")
            out.update(dict.fromkeys(".".join(parts[:i]) for i in range(1, len(parts) + 1)))
    return list(out)


def _batches() -> list[tuple[dict[str, str], list[str], list[findings.Finding]]]:
    """The reproductions by process environment and framework, each batch with the framework modules (and NumPy)
    that every one of its scripts imports itself, in the order the first imports them: what its fork server imports
    once. Largest batch first."""
    by_key: dict[tuple, list[findings.Finding]] = {}
    for f in findings.FINDINGS:
        adapter = registry.load(f.reproduce_with or f.adapters[0])
        by_key.setdefault((tuple(sorted(adapter.process_env.items())), adapter.requires), []).append(f)
    out = []
    for batch in sorted(by_key.values(), key=len, reverse=True):
        imported = [_imported_modules(os.path.join(ROOT, f.reproduction)) for f in batch]
        preload = [m for m in imported[0] if m.split(".")[0] in FRAMEWORK_MODULES | {"numpy"}
                   and all(m in other for other in imported[1:])]
        out.append((_reproduction_env(batch[0]), preload, batch))
    return out


def _run_batch(batch) -> list[tuple[findings.Finding, script_forks.Outcome | subprocess.CompletedProcess | str, float]]:
    """A batch through its fork server; where the server cannot fork (its preload failed or started threads), each
    script in a fresh process."""
    env, preload, fs = batch
    try:
        done = script_forks.run([f.reproduction for f in fs], env, preload, ROOT, REPRODUCTION_TIMEOUT)
    except script_forks.ServerError:
        return [_run_reproduction(f) for f in fs]
    return [(f, o if o.returncode is not None else f"timed out after {REPRODUCTION_TIMEOUT} s", o.seconds)
            for f, o in ((f, done[f.reproduction]) for f in fs)]


@pytest.fixture(scope="module")
def reproduction_runs():
    """Every reproduction run as `python findings/<name>.py` would run, in its adapter's process environment: the
    scripts of one environment and framework in children forked from one process that imported the framework once
    (meta_tests/script_forks.py), two batches at a time (each child holds a framework's memory)."""
    workers = min(4, max(2, len(os.sched_getaffinity(0))))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return {f.name: (proc, secs) for batch in pool.map(_run_batch, _batches()) for f, proc, secs in batch}


SCRIPT_ENDINGS = {
    "exit_3": "sys.exit(3)",
    "exit_message": "sys.exit('gone')",
    "uncaught": "raise ValueError('uncaught')",
    "falls_off_the_end": "pass",
    "fd_writes": "os.write(1, b'fd1\\n'); os.write(2, b'fd2\\n'); print('buffered', end='')",
    "atexit_and_thread": "atexit.register(print, 'atexit'); threading.Thread(target=lambda: (time.sleep(0.2), "
                         "print('thread'))).start()",
}


def test_a_forked_script_ends_as_in_a_fresh_interpreter(tmp_path):
    """What the fork server returns for a script is what `python script.py` gives: exit status, stdout, stderr (the
    traceback's last line), the script's __name__, __file__, sys.argv and sys.path[0]; one past its timeout is
    killed; a server whose imports started a thread forks nothing."""
    scripts = []
    for name, ending in SCRIPT_ENDINGS.items():
        (tmp_path / f"{name}.py").write_text(
            "import atexit, os, sys, threading, time\nimport numpy\n"
            "print(__name__, __file__, sys.argv, sys.path[0], file=sys.stderr)\nprint('start')\n" + ending + "\n")
        scripts.append(f"{name}.py")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}  # NumPy's BLAS: no pool at import
    forked = script_forks.run(scripts, env, ["numpy"], str(tmp_path), 60)
    for script in scripts:
        fresh = subprocess.run([sys.executable, script], cwd=tmp_path, env=env, capture_output=True, text=True)
        got = forked[script]
        assert (got.returncode, got.stdout) == (fresh.returncode, fresh.stdout), (script, got, fresh)
        assert got.stderr.splitlines()[0] == fresh.stderr.splitlines()[0], (script, got.stderr, fresh.stderr)
        assert got.stderr.splitlines()[-1] == fresh.stderr.splitlines()[-1], (script, got.stderr, fresh.stderr)
    (tmp_path / "hangs.py").write_text("import time\ntime.sleep(60)\n")
    (hung,) = script_forks.run(["hangs.py"], env, [], str(tmp_path), 1).values()
    assert hung.returncode is None and hung.seconds < 30, hung
    (tmp_path / "threaded.py").write_text("import threading, time\nthreading.Thread(target=time.sleep, args=(30,), "
                                          "daemon=True).start()\n")
    with pytest.raises(script_forks.ServerError, match="started 1 threads"):  # then the caller runs them fresh
        script_forks.run(scripts, env, ["threaded"], str(tmp_path), 60)


# Every findings/<name>.py runs its framework (about 95 CPU s in all, the imports shared per batch): the test command
# runs them, the main job (matrix) leaves them out with the other slow meta tests.
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
    assert re.search(r"^versions: \S+ \d", proc.stdout, re.M), \
        f"{finding.reproduction} printed no versions\n{out[-2000:]}"


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
