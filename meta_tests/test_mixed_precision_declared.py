"""Every built-in adapter declares its framework's mixed-precision idioms, cites them, and names a runner for them
(no framework is imported)."""

import pytest

from bnsuite.adapters import mixed_precision as mp
from bnsuite.adapters import registry

# The idioms each framework has (adapters/mixed_precision.py): a layer built with defaults fed low-precision
# activations everywhere, plus the framework's own mixed-precision machinery.
EXPECTED_KINDS = {
    "torch": {"defaults", "autocast"},
    "keras-tensorflow": {"defaults", "policy"}, "keras-jax": {"defaults", "policy"}, "keras-torch": {"defaults", "policy"},
    "tf_keras": {"defaults", "policy"}, "tf1-keras": {"defaults", "policy"},
    "tf1-graph": {"defaults", "float32_layer"},
    "flax-linen": {"defaults", "dtype", "param_dtype"}, "flax-nnx": {"defaults", "dtype", "param_dtype"},
    "paddle": {"defaults", "autocast"}, "tinygrad": {"defaults"},
}


@pytest.mark.parametrize("adapter_id", list(registry.BUILTIN))
def test_mixed_precision_declared(adapter_id):
    cls = registry.load(adapter_id)
    declared = cls.declare().mixed_precision
    assert cls.mixed_precision_runner, f"{adapter_id}: no mixed-precision runner"
    want = {f"{k}-{low}" for k in EXPECTED_KINDS[adapter_id] for low in mp.LOW}
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
