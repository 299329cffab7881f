"""The architecture's rules, checked on the source: data flows one way and each table has one home.

Flow: suites -> adapters -> frameworks; results files -> reports. So nothing under bnsuite/adapters, bnsuite/reports
or bnsuite/probe imports bnsuite.suites; no suite imports conftest, the pytest plugin, another test module or a
framework (framework code lives in adapters, imported lazily). Tables: the built-in adapter ids live in
bnsuite/adapters/registry.py BUILTIN; what cannot import Python (tox.ini, the workflow, the README's table) is checked
against it here and in meta_tests/test_groups.py.
"""

import ast
import os
import re

import pytest

from bnsuite.adapters import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "bnsuite")
FRAMEWORKS = {"torch", "tensorflow", "keras", "tf_keras", "jax", "jaxlib", "flax", "optax"}
MAX_LINES = 450
# Source files allowed past MAX_LINES, with the reason.
LONG_FILES = {
    "bnsuite/reports/render.py": "the report engineer's module (out of this refactor's scope)",
}


def _py_files(*parts: str) -> list[str]:
    top = os.path.join(PKG, *parts)
    out = []
    for dirpath, _, files in os.walk(top):
        out += [os.path.join(dirpath, f) for f in files if f.endswith(".py")]
    return sorted(out)


def _imports(path: str) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions count): "a.b" and "a.b.name"."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _rel(path: str) -> str:
    return os.path.relpath(path, ROOT)


@pytest.mark.parametrize("area", ["adapters", "reports", "probe"])
def test_lower_layers_never_import_suites(area):
    bad = {_rel(p): sorted(m for m in _imports(p) if m == "bnsuite.suites" or m.startswith("bnsuite.suites."))
           for p in _py_files(area)}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"bnsuite/{area} must not import bnsuite.suites (data flows suites -> adapters): {bad}"


def test_suites_import_no_conftest_plugin_test_module_or_framework():
    bad = {}
    for p in _py_files("suites"):
        wrong = sorted(m for m in _imports(p)
                       if m.split(".")[0] in ("conftest", *FRAMEWORKS) or m.startswith("bnsuite.plugin")
                       or re.match(r"bnsuite\.suites\.test_", m) or m.startswith("meta_tests"))
        if wrong:
            bad[_rel(p)] = wrong
    assert not bad, ("a suite imports conftest, the plugin, another test module or a framework (shared pieces "
                     f"belong in a helper module, framework code in an adapter): {bad}")


def test_no_source_file_is_too_long():
    long = {}
    for p in _py_files():  # the whole package: the runner, the plugin and the command line too
        n = sum(1 for _ in open(p, encoding="utf-8"))
        if n > MAX_LINES and _rel(p) not in LONG_FILES:
            long[_rel(p)] = n
    assert not long, f"source files over {MAX_LINES} lines (split them, or state the reason in LONG_FILES): {long}"


def test_workflow_matrix_lists_every_builtin_adapter():
    text = open(os.path.join(ROOT, ".github", "workflows", "conformance.yml"), encoding="utf-8").read()
    m = re.search(r"env:\s*\[([^\]]*)\]", text)
    assert m, "the workflow's cpu matrix (env: [...]) is missing"
    envs = [e.strip() for e in m.group(1).split(",") if e.strip()]
    assert envs == [*registry.BUILTIN, "meta"], f"workflow matrix {envs} differs from registry.BUILTIN + meta"


def test_readme_table_lists_every_builtin_adapter():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("## What is covered", 1)[1].split("\n\n", 2)[1]
    listed = re.findall(r"`([a-z0-9_-]+)`", "\n".join(line.split("|")[1] for line in section.splitlines()
                                                      if line.startswith("| `")))
    assert listed == list(registry.BUILTIN), f"README's adapter table {listed} differs from registry.BUILTIN"


def test_every_builtin_adapter_names_its_network_builder():
    missing = [i for i in registry.BUILTIN if not getattr(registry.load(i), "network", None)]
    assert not missing, f"built-in adapters without a `network` builder: {missing}"


def test_benchmark_knows_every_builtin_adapter():
    tree = ast.parse(open(os.path.join(ROOT, "benchmarks", "bench_groups.py"), encoding="utf-8").read())
    table = next(n.value for n in tree.body if isinstance(n, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "IMPORTS" for t in n.targets))
    keys = [k.value for k in table.keys]
    assert keys == list(registry.BUILTIN), f"benchmarks/bench_groups.py IMPORTS {keys} differs from registry.BUILTIN"
