"""Every built-in declaration is complete and cites a source for every value (no framework is imported)."""

import dataclasses

import pytest

from bnsuite.adapters import registry
from bnsuite.adapters.base import Cited, Declaration

CATEGORIES = {
    "momentum_weights": {"new", "old"},
    "normalize_estimator": {"biased", "unbiased"},
    "training_default": {"inference", "training", "module-mode"},
    "variance_algorithm": {"two-pass", "one-pass-clamped", "one-pass-unclamped"},
}


def _cited(decl: Declaration):
    for f in dataclasses.fields(decl):
        value = getattr(decl, f.name)
        if isinstance(value, Cited):
            yield f.name, value
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, Cited):
                    yield f"{f.name}[{key}]", item


@pytest.mark.parametrize("adapter_id", list(registry.BUILTIN))
def test_declaration_is_complete_and_cited(adapter_id):
    decl = registry.load(adapter_id).declare()
    missing = [name for name, c in _cited(decl) if not c.source.strip() or c.source.startswith("not declared")]
    assert not missing, f"{adapter_id}: declared values without a source: {missing}"
    for name, allowed in CATEGORIES.items():
        value = getattr(decl, name).value
        assert value in allowed or (name == "training_default" and value.startswith("error:")), \
            f"{adapter_id}: {name}={value!r}"
    assert set(decl.running_var_estimator.value.values()) <= {"biased", "unbiased"}
    assert decl.freeze, f"{adapter_id}: no freeze idioms declared"
    assert {"float16", "bfloat16", "float64"} <= {k.split(":")[0] for k in decl.precision}, \
        f"{adapter_id}: precision rules missing for some dtypes: {sorted(decl.precision)}"
    single = decl.single_value_batch.value
    assert single in ("offset", "input unchanged") or single.startswith("error:"), single
