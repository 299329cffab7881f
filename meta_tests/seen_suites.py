"""A pytest plugin for the broken-adapter run (meta_tests/test_broken_adapters.py): each broken adapter's cases run
only in the suite tests that can see its breakage.

The run passes BNSUITE_ONLY_IN, a JSON object {adapter id: {"in": ["test_<area>.py" or "test_<area>.py::test_name",
...], "params": {parameter: [values]}, "skip": {"test_<area>.py::test_name": {parameter: [values]}}}}; a case of an
adapter named there is deselected outside those modules and tests, where one of its parameters takes a value not
listed in "params", and in the tests named in "skip" where a parameter takes a value listed there. Adapters not named
run everywhere.

Most adapters of the run see few tests: a test's cases are made only for the adapters that run in it (the bnsuite
plugin parametrizes from its adapter list, narrowed here for the one call), so collection does not build and then drop
some twenty thousand items; the parameter values are still judged per item after collection.
"""

from __future__ import annotations

import json
import os

import pytest

ENV_VAR = "BNSUITE_ONLY_IN"


def _kept(item, only: dict) -> bool:
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    rule = only.get(getattr(params.get("case"), "adapter", None) and params["case"].adapter.id)
    if rule is None:
        return True
    where = {item.path.name, f"{item.path.name}::{item.originalname}"}
    if not where & set(rule["in"]):
        return False
    if any(params.get(name) in values for test, skip in rule.get("skip", {}).items() if test in where
           for name, values in skip.items()):
        return False
    return all(params[name] in values for name, values in rule.get("params", {}).items() if name in params)


def _runs_in(cls, where: set[str], only: dict) -> bool:
    rule = only.get(cls.id)
    return rule is None or bool(where & set(rule["in"]))


@pytest.hookimpl(hookwrapper=True)
def pytest_generate_tests(metafunc):
    only = json.loads(os.environ.get(ENV_VAR) or "{}")
    adapters = getattr(metafunc.config, "_bn_adapters", None)
    if not only or adapters is None or "case" not in metafunc.fixturenames:
        yield
        return
    name = metafunc.definition.path.name
    where = {name, f"{name}::{metafunc.definition.originalname}"}
    kept = [cls for cls in adapters if _runs_in(cls, where, only)]
    # a test no adapter runs in keeps them all: its items are deselected below rather than left an empty parameter set
    metafunc.config._bn_adapters = kept or adapters
    try:
        yield
    finally:
        metafunc.config._bn_adapters = adapters


def pytest_collection_modifyitems(config, items):
    only = json.loads(os.environ.get(ENV_VAR) or "{}")
    if not only:
        return
    keep, drop = [], []
    for item in items:
        (keep if _kept(item, only) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
