"""What a built-in adapter needs beyond its module, checked against its framework rows (bnsuite/adapters/
frameworks.py): the checklist meta_tests/test_framework_rows.py prints for every built-in adapter and for a fake one.

A new built-in adapter is at most five files: its module (with one line in registry.BUILTIN), its framework row,
its pin (requirements/all.txt and pyproject's extras), its row in docs/coverage.md, its tox env and workflow entries.
Everything else (the runner's groups, the plugin's markers, the benchmarks' import lines, .ci/assert-gpu, the
architecture guard's framework list) derives from the rows and the registry.
"""

from __future__ import annotations

import configparser
import os
import re

from bnsuite.adapters import frameworks, registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts: str) -> str:
    return open(os.path.join(ROOT, *parts), encoding="utf-8").read()


def _tox() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(os.path.join(ROOT, "tox.ini"))
    return cp


def tox_value(cp, section: str, key: str) -> str:
    """A tox setting with its {[section]key} references expanded."""
    text = cp[section].get(key, "")
    return re.sub(r"\{\[([^\]]+)\]([a-z_]+)\}", lambda m: tox_value(cp, m.group(1), m.group(2)), text)


def pinned(text: str) -> dict[str, str]:
    """name==version requirements in a text (a requirements file, tox deps, pyproject extras), aliases resolved."""
    out = {}
    for name, version in re.findall(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([0-9][^\s\"',]*)", text):
        name = name.lower().replace("-", "_") if name.lower() not in frameworks.ALIASES else name.lower()
        out[frameworks.ALIASES.get(name, name)] = version
    return out


def checklist(adapter_id: str) -> list[str]:
    """The pieces adapter `adapter_id` lacks, one line each naming the file to add it to (empty: complete)."""
    if adapter_id not in registry.BUILTIN:
        return [f"bnsuite/adapters/<module>.py and a line in bnsuite/adapters/registry.py BUILTIN for {adapter_id!r}"]
    cls = registry.load(adapter_id)
    missing = []
    rows = frameworks.rows_of(cls)
    if not rows:
        missing.append(f"a framework row (Framework in its adapter module, named by `runs_on` or `rows`) for "
                       f"{adapter_id!r}")
    row_pins = {d: v for row in rows for d, v in row.pins.items()}
    unpinned = [m for m in cls.requires if m not in row_pins]
    if rows and unpinned:
        missing.append(f"the pin of {', '.join(unpinned)} in {adapter_id!r}'s framework row (Framework.pins)")
    reqs = {**pinned(_read("requirements", "all.txt")), **pinned(_read("requirements", "nodeps.txt"))}
    extras = pinned(_read("pyproject.toml").split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0])
    for dist, version in row_pins.items():
        if reqs.get(dist) != version:
            missing.append(f"requirements/all.txt (or nodeps.txt): {dist}=={version} for {adapter_id!r} "
                           f"(has {reqs.get(dist)})")
        if extras.get(dist, version) != version or (dist in cls.requires and dist not in extras):
            missing.append(f"pyproject.toml extras: {dist}=={version} for {adapter_id!r} (has {extras.get(dist)})")
    missing += _readme(adapter_id, cls)
    missing += _tox_env(adapter_id, cls, row_pins)
    missing += _workflow(adapter_id)
    return missing


def _readme(adapter_id: str, cls) -> list[str]:
    section = _read("docs", "coverage.md").split("## Adapters", 1)[1].split("\n## ", 1)[0]
    rows = {ids: line for line in section.splitlines() if line.startswith("| `")
            for ids in re.findall(r"`([a-z0-9_-]+)`", line.split("|")[1])}
    if adapter_id not in rows:
        return [f"docs/coverage.md: a row for `{adapter_id}` in the table under 'Adapters'"]
    switches = rows[adapter_id].split("|")[3]
    absent = [k for k in cls.process_env if k not in switches]
    return [f"docs/coverage.md: the process switch {k} in `{adapter_id}`'s row" for k in absent]


def _tox_env(adapter_id: str, cls, row_pins: dict[str, str]) -> list[str]:
    cp = _tox()
    section = f"testenv:{adapter_id}"
    env_list = [e.strip() for e in cp["tox"]["env_list"].split(",")]
    missing = [] if adapter_id in env_list else [f"tox.ini: {adapter_id} in [tox] env_list"]
    if section not in cp:
        return missing + [f"tox.ini: a [{section}] env"]
    deps = pinned(tox_value(cp, section, "deps"))
    if "requirements/nodeps.txt" in tox_value(cp, section, "commands_pre"):  # installed --no-deps before the run
        deps.update(pinned(_read("requirements", "nodeps.txt")))
    for module in cls.requires:
        if deps.get(module) != row_pins.get(module, deps.get(module)) or module not in deps:
            missing.append(f"tox.ini [{section}] deps: {module}=={row_pins.get(module)} (has {deps.get(module)})")
    for key, value in cls.process_env.items():
        if f"{key} = {value}" not in [line.strip() for line in tox_value(cp, section, "setenv").splitlines()]:
            missing.append(f"tox.ini [{section}] setenv: {key} = {value}")
    if f"--adapter {adapter_id}" not in cp[section].get("commands", ""):
        missing.append(f"tox.ini [{section}] commands: pytest bnsuite/suites --adapter {adapter_id}")
    return missing


def _workflow(adapter_id: str) -> list[str]:
    text = _read(".github", "workflows", "conformance.yml")
    matrix = re.search(r"env:\s*\[([^\]]*)\]", text)
    missing = []
    if not matrix or adapter_id not in [e.strip() for e in matrix.group(1).split(",")]:
        missing.append(f".github/workflows/conformance.yml: {adapter_id} in the cpu job's matrix (env: [...])")
    if f"--only {adapter_id}" not in text:
        missing.append(f".github/workflows/conformance.yml: --only {adapter_id} in the GPU job's command")
    return missing
