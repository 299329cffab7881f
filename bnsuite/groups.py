"""The test groups: one process per built-in adapter, plus the meta tests.

A group is (environment, pytest arguments). The adapter groups derive from bnsuite/adapters/registry.py BUILTIN (ids
and order) and each adapter class's `process_env`; tox.ini and the workflow are kept in step with them by
meta_tests/test_groups.py. Standard library only at import, like the runner.
"""

from __future__ import annotations

import json
import os
import subprocess

from bnsuite import envs
from bnsuite.console import fail

Group = tuple[dict[str, str], list[str]]
_GROUPS: dict[str, Group] = {}
_READER: list[str] = []  # the interpreter that reads the registry where this one lacks NumPy (cli: --python)
META = "meta"
META_GROUP: tuple[str, Group] = (META, ({}, ["meta_tests"]))
# The meta tests run as two groups side by side: the quick ones, and the ones that start many processes (every
# findings/<name>.py reproduction and the fresh install of the package), so neither is the run's critical path. -m
# selections per command: the main job (matrix) leaves both slow ones (marked slow) to `test`.
META_SLOW = "meta-slow"
META_NAMES = (META, META_SLOW)
META_MARKERS = {
    "matrix": {META: "not slow and not reproductions"},
    "test": {META: "not slow and not reproductions", META_SLOW: "slow or reproductions"},
}


def read_with(python: str | None) -> None:
    """Read the registry with this interpreter where this one cannot (the groups' --python)."""
    _READER[:] = [python] if python else []


def builtin_groups() -> dict[str, Group]:
    """group -> (environment, pytest arguments), one per built-in adapter.

    The adapter modules need NumPy; where this interpreter lacks it (the runner itself is standard library only), the
    groups' interpreter (read_with) or else the main environment's python reads them."""
    if not _GROUPS:
        try:
            from bnsuite.adapters import registry

            found = {i: dict(registry.load(i).process_env) for i in registry.BUILTIN}
        except ImportError:
            py = _READER[0] if _READER else envs.ensure_venv()
            code = ("import json; from bnsuite.adapters import registry; "
                    "print(json.dumps({i: dict(registry.load(i).process_env) for i in registry.BUILTIN}))")
            out = subprocess.run([py, "-c", code], cwd=envs.ROOT, capture_output=True, text=True)
            if out.returncode != 0:
                last = (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]
                fail(f"cannot read the adapter registry with {py}: {last}")
            found = json.loads(out.stdout)
        _GROUPS.update({i: (env, ["bnsuite/suites", "--adapter", i]) for i, env in found.items()})
    return _GROUPS


def __getattr__(name: str):
    """`groups.GROUPS`: builtin_groups(), read on first use."""
    if name == "GROUPS":
        return builtin_groups()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def for_command(command: str) -> list[tuple[str, Group]]:
    """The groups `matrix` or `test` runs, in order. The meta tests are not shipped: an installed bnsuite runs the
    adapter groups only; the main job (matrix) leaves the slow meta tests (a fresh install of the package) to
    `test`; the meta tests are two groups (META_MARKERS)."""
    env, args = META_GROUP[1]
    marks = META_MARKERS.get(command, META_MARKERS["test"])
    meta = [(name, (env, [*args, "-m", marks[name]])) for name in META_NAMES if name in marks]
    return (meta if envs.CHECKOUT else []) + list(builtin_groups().items())


def select(groups: list[tuple[str, Group]], only: list[str]) -> list[tuple[str, Group]]:
    """The groups named by --only, in the order named, each once; an unknown name is one line and exit 2."""
    if not only:
        return groups
    known = dict(groups)
    unknown = [g for g in only if g not in known]
    if unknown:
        fail(f"unknown group {unknown[0]!r}: use one of {', '.join(known)}")
    return [(g, known[g]) for g in dict.fromkeys(only)]


def own(refs: list[str]) -> list[tuple[str, Group]]:
    """A group per user adapter ('package.module:Class'), named after it, that imports it from the current directory
    (the groups run in the checkout, or here when bnsuite is installed)."""
    here = os.getcwd()
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    out = []
    for ref in refs:
        if ref.count(":") != 1 or not all(ref.split(":")):
            fail(f"--adapter {ref!r}: expected 'package.module:ClassName'")
        out.append((ref.replace(":", "."), ({"PYTHONPATH": path}, ["bnsuite/suites", "--adapter", ref])))
    return out


def pytest_targets(args: list[str]) -> list[str]:
    """A group's pytest arguments; installed (no checkout), the suites' paths become --pyargs module names."""
    if envs.CHECKOUT:
        return list(args)
    out = ["--pyargs"]
    for a in args:
        out.append(a.rstrip("/").replace("/", ".") if a.startswith("bnsuite/") else a)
    return out


def listing() -> list[str]:
    """`python3 -m bnsuite groups`: one line per group."""
    return [f"{name:18s} {' '.join(f'{k}={v}' for k, v in env.items()) or '-':28s} pytest {' '.join(args)}"
            for name, (env, args) in [*builtin_groups().items(),
                                      *((m, (META_GROUP[1][0], [*META_GROUP[1][1], "-m", META_MARKERS["test"][m]]))
                                        for m in META_NAMES)]]
