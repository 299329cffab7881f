"""Freeze idioms: each adapter's declared idioms (Declaration.freeze) are exactly the ones it implements (its one
freeze_idioms table, which its lone layer and its networks both read), and no adapter module spells an idiom's name
in a comparison (so a second copy of the table cannot grow in a branch). No framework is imported."""

import ast
import os

import pytest

from bnsuite.adapters import registry
from bnsuite.adapters.base import FreezeIdiom

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("adapter_id", list(registry.BUILTIN))
def test_declared_idioms_are_the_implemented_ones(adapter_id):
    cls = registry.load(adapter_id)
    declared, implemented = set(cls.declare().freeze), set(cls.freeze_idioms)
    assert declared == implemented, (f"{adapter_id}: declared but not implemented {sorted(declared - implemented)}; "
                                     f"implemented but not declared {sorted(implemented - declared)}")
    for idiom, how in cls.freeze_idioms.items():
        assert isinstance(how, FreezeIdiom), f"{adapter_id}: {idiom} is not a FreezeIdiom: {how!r}"
        assert how.network is None or how.network.strip(), f"{adapter_id}: {idiom}: empty network reason"


def test_no_adapter_module_compares_an_idiom_by_name():
    idioms = {i for a in registry.BUILTIN for i in registry.load(a).freeze_idioms}
    bad = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "bnsuite", "adapters")):
        for f in (f for f in files if f.endswith(".py")):
            path = os.path.join(dirpath, f)
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
                if isinstance(node, ast.Compare):
                    names = {c.value for side in (node.left, *node.comparators) for c in ast.walk(side)
                             if isinstance(c, ast.Constant) and c.value in idioms}
                    if names:
                        bad.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {sorted(names)}")
    assert not bad, f"freeze idioms compared by name (read the recipe from the adapter's freeze_idioms): {bad}"
