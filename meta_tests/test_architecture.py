"""The architecture's rules, checked on the source: data flows one way and each table has one home.

Flow: suites -> adapters -> frameworks; results files -> reports. So nothing under bnsuite/adapters, bnsuite/reports
or bnsuite/probe imports bnsuite.suites; no suite imports conftest, the pytest plugin, another test module or a
framework (framework code lives in adapters, imported lazily). Tables: the built-in adapter ids live in
bnsuite/adapters/registry.py BUILTIN; what cannot import Python (tox.ini, the workflow, docs/coverage.md's table) is
checked against it here and in meta_tests/test_groups.py.
"""

import ast
import os
import re

import pytest

from bnsuite.adapters import capabilities, frameworks, registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "bnsuite")
FRAMEWORKS = frameworks.framework_modules()  # every module a framework row imports or pins
MAX_LINES = 450


def _py_files(*parts: str) -> list[str]:
    """Every .py file under bnsuite/<parts> (the whole package without parts)."""
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
    long = {_rel(p): n for p in _py_files() if (n := sum(1 for _ in open(p, encoding="utf-8"))) > MAX_LINES}
    assert not long, f"package files over {MAX_LINES} lines (split them by what they do): {long}"


def _module_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, at any depth (imports inside functions count); an import of a
    package's name resolves to the submodule where one has that name."""
    mods = {}
    for p in _py_files():
        name = os.path.relpath(p, ROOT)[:-3].replace(os.sep, ".")
        mods[name.removesuffix(".__init__")] = p

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, path in mods.items():
        pkg = mod if path.endswith("__init__.py") else mod.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
            if isinstance(node, ast.Import):
                edges |= {resolve(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                edges |= {resolve(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base) for a in node.names}
        graph[mod] = {e for e in edges if e and e != mod}
    return graph


def _cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """The shortest import path from `start` back to itself, or None."""
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for nxt in sorted(graph[path[-1]]):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                paths.append(path + [nxt])
    return None


def test_no_import_cycle():
    graph = _module_graph()
    cycles, covered = [], set()
    for mod in sorted(graph):
        cycle = None if mod in covered else _cycle_through(graph, mod)
        if cycle:
            covered |= set(cycle)
            cycles.append(" -> ".join(cycle))
    assert not cycles, "import cycles in the package (imports inside functions count):\n  " + "\n  ".join(cycles)


def test_workflow_matrix_lists_every_builtin_adapter():
    text = open(os.path.join(ROOT, ".github", "workflows", "conformance.yml"), encoding="utf-8").read()
    m = re.search(r"env:\s*\[([^\]]*)\]", text)
    assert m, "the workflow's cpu matrix (env: [...]) is missing"
    envs = [e.strip() for e in m.group(1).split(",") if e.strip()]
    assert envs == [*registry.BUILTIN, "meta", "meta-slow"], f"workflow matrix {envs} differs from registry.BUILTIN + meta + meta-slow"


def test_coverage_table_lists_every_builtin_adapter():
    text = open(os.path.join(ROOT, "docs", "coverage.md"), encoding="utf-8").read()
    section = text.split("## Adapters", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"`([a-z0-9_-]+)`", "\n".join(line.split("|")[1] for line in section.splitlines()
                                                      if line.startswith("| `")))
    assert listed == list(registry.BUILTIN), f"docs/coverage.md's adapter table {listed} differs from registry.BUILTIN"


def test_every_builtin_adapter_names_its_network_builder():
    missing = [i for i in registry.BUILTIN if "network" not in capabilities.named(registry.load(i))]
    assert not missing, f"built-in adapters without a `network` capability: {missing}"


# The capability modules: the loader and what an adapter's capabilities table names (framework code lives in their
# per-framework modules, never behind a branch on adapter ids).
CAPABILITY_MODULES = ("capabilities.py", "edge_facts.py", "nets", "norms", "blocks", "replicas", "mixed_precision")


def _capability_files() -> list[str]:
    return [p for name in CAPABILITY_MODULES
            for p in ([os.path.join(PKG, "adapters", name)] if name.endswith(".py") else _py_files("adapters", name))]


def test_base_imports_no_capability_module():
    base = os.path.join(PKG, "adapters", "base.py")
    names = {f"bnsuite.adapters.{n.removesuffix('.py')}" for n in CAPABILITY_MODULES}
    bad = sorted(m for m in _imports(base) if any(m == n or m.startswith(n + ".") for n in names))
    assert not bad, f"bnsuite/adapters/base.py imports capability modules: {bad}"


def test_no_capability_module_branches_on_adapter_ids():
    ids = set(registry.BUILTIN) | {i.split("-")[0] + "-" for i in registry.BUILTIN if "-" in i}

    def id_strings(node) -> set[str]:
        items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
        return {e.value for e in items if isinstance(e, ast.Constant) and e.value in ids}

    def mentions_id(node) -> bool:
        return any((isinstance(n, ast.Name) and "id" in n.id.split("_")) or (isinstance(n, ast.Attribute)
                   and n.attr == "id") for n in ast.walk(node))

    bad = []
    for path in _capability_files():
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                hit = set().union(*map(id_strings, sides)) if any(map(mentions_id, sides)) else set()
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("startswith", "endswith") and mentions_id(node.func.value):
                hit = set().union(*map(id_strings, node.args))
            elif isinstance(node, ast.Dict):
                keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
                hit = set(keys) & set(registry.BUILTIN) if len(set(keys) & set(registry.BUILTIN)) > 1 else set()
            else:
                continue
            if hit:
                bad.append(f"{_rel(path)}:{node.lineno} {sorted(hit)}")
    assert not bad, ("capability modules branch on (or key tables by) adapter ids; name the framework's own module "
                     f"in the adapter's capabilities instead: {bad}")
