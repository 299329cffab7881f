"""Every built-in adapter declares its framework's mixed-precision idioms, cites them, and names a runner that
implements exactly those (no framework is imported)."""

import sys

import pytest

from bnsuite.adapters import mixed_precision as mp
from bnsuite.adapters import capabilities, registry

@pytest.mark.parametrize("adapter_id", list(registry.BUILTIN))
def test_mixed_precision_declared(adapter_id):
    cls = registry.load(adapter_id)
    declared = cls.declare().mixed_precision
    runner = capabilities.load(cls, "mixed_precision")
    # The idioms the runner's module implements, in each low-precision dtype: declared and implemented are one set.
    want = {f"{k}-{low}" for k in sys.modules[runner.__module__].KINDS for low in mp.LOW}
    assert set(declared) == want, f"{adapter_id}: declared {sorted(declared)}, expected {sorted(want)}"
    for idiom, cited in declared.items():
        mp.parse(idiom)
        rule = cited.value
        assert cited.source.strip(), f"{adapter_id}[{idiom}]: no source"
        assert rule.supported == "yes" or rule.supported.startswith("error:")
        if rule.supported == "yes":
            assert {rule.output, rule.stats, rule.params, rule.state} <= {"float16", "bfloat16", "float32", "float64"}


def test_linen_and_nnx_disagree_only_where_declared():
    linen, nnx = (registry.load(i).declare().mixed_precision for i in ("flax-linen", "flax-nnx"))
    differ = sorted(k for k in linen if linen[k].value != nnx[k].value)
    assert differ == ["param_dtype-bfloat16", "param_dtype-float16"], differ
