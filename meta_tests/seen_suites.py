"""A pytest plugin for the broken-adapter run (meta_tests/test_broken_adapters.py): each broken adapter's cases run
only in the suite tests that can see its breakage.

The run passes BNSUITE_ONLY_IN, a JSON object {adapter id: {"in": ["test_<area>.py" or "test_<area>.py::test_name",
...], "params": {parameter: [values]}}}; a case of an adapter named there is deselected outside those modules and
tests, and where one of its parameters takes a value not listed. Adapters not named run everywhere.
"""

from __future__ import annotations

import json
import os

ENV_VAR = "BNSUITE_ONLY_IN"


def _kept(item, only: dict) -> bool:
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    rule = only.get(getattr(params.get("case"), "adapter", None) and params["case"].adapter.id)
    if rule is None:
        return True
    if not {item.path.name, f"{item.path.name}::{item.originalname}"} & set(rule["in"]):
        return False
    return all(params[name] in values for name, values in rule.get("params", {}).items() if name in params)


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
