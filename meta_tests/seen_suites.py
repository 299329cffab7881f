"""A pytest plugin for the broken-adapter run (meta_tests/test_broken_adapters.py): each broken adapter's cases run
only in the suite tests that can see its breakage.

The run passes BNSUITE_ONLY_IN, a JSON object {adapter id: ["test_<area>.py" or "test_<area>.py::test_name", ...]};
a case of an adapter named there is deselected outside those modules and tests. Adapters not named (the real torch
adapter) run everywhere.
"""

from __future__ import annotations

import json
import os

ENV_VAR = "BNSUITE_ONLY_IN"


def pytest_collection_modifyitems(config, items):
    only = json.loads(os.environ.get(ENV_VAR) or "{}")
    if not only:
        return
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        case = callspec.params.get("case") if callspec is not None else None
        allowed = only.get(getattr(getattr(case, "adapter", None), "id", None))
        here = {item.path.name, f"{item.path.name}::{item.originalname}"}
        (drop if allowed is not None and not here & set(allowed) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
