"""Every built-in normalization-layer declaration is complete, in its categories, and cites a source for every value
(no framework is imported: the Keras 3 declaration is built per backend by name)."""

import dataclasses

import pytest

from bnsuite.adapters import capabilities, registry
from bnsuite.adapters.base import Cited
from bnsuite.adapters.norms import AXES, KINDS, VARIANCE, NormAdapter, NormDeclaration
from bnsuite.adapters.norms import reference as nref
from bnsuite.adapters.norms.flax_norms import LinenNorms, NnxNorms
from bnsuite.adapters.norms.keras_norms import TF_KERAS_DECLARATION, _keras3_declaration
from bnsuite.adapters.norms.torch_norms import TorchNorms

DECLARATIONS = {
    "torch": TorchNorms.declare(), "flax-linen": LinenNorms.declare(), "flax-nnx": NnxNorms.declare(),
    "tf_keras": TF_KERAS_DECLARATION,
    **{f"keras-{b}": _keras3_declaration(b) for b in ("tensorflow", "jax", "torch")},
}


@pytest.mark.parametrize("name", list(DECLARATIONS))
def test_norm_declaration_is_complete_and_cited(name):
    decl: NormDeclaration = DECLARATIONS[name]
    cited = {f.name: getattr(decl, f.name) for f in dataclasses.fields(decl)
             if isinstance(getattr(decl, f.name), Cited)}
    cited.update({f"kinds[{k}]": v for k, v in decl.kinds.items()})
    missing = [n for n, c in cited.items() if not c.source.strip() or c.source.startswith("not declared")]
    assert not missing, f"{name}: declared values without a source: {missing}"
    assert set(decl.kinds) | set(decl.missing) == set(KINDS), f"{name}: every kind is declared or has a reason"
    for kind, c in decl.kinds.items():
        f = c.value
        assert f.default_axes in AXES and f.variance in VARIANCE, (name, kind, f)
        assert f.default_eps == "dtype-eps" or isinstance(f.default_eps, float), (name, kind, f.default_eps)
        assert (f.variance == "mean-square") == (kind == "rms"), (name, kind, f.variance)
    assert decl.group_layout.value in nref.GROUP_LAYOUTS
    assert set(decl.group_layouts.value) <= {"channels-first", "channels-last"} and decl.group_layouts.value
    assert decl.instance_running_stats.value in (None, "running", "instance")
    assert decl.layer_rms_scaling.value in (None, "variance", "mean-square")


@pytest.mark.parametrize("adapter_id", list(registry.BUILTIN))
def test_norms_capability_resolves(adapter_id):
    cls = registry.load(adapter_id)
    if "norms" not in capabilities.named(cls):
        pytest.skip(f"{adapter_id} names no norm adapter")
    assert issubclass(capabilities.load(cls, "norms"), NormAdapter)
