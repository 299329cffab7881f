"""The one way in for capabilities (bnsuite/adapters/capabilities.py): every built-in adapter names only known
capabilities and each one loads as its kind; an adapter that does not name one gets CapabilityAbsent (a skip naming
adapter and capability); one that names a reference that cannot be loaded, or is of the wrong kind, gets
CapabilityBroken (a failure naming adapter, capability and error). A user's adapter plugs in the same way."""

import pytest

from bnsuite.adapters import capabilities, registry
from bnsuite.adapters.base import BatchNormAdapter, Unsupported
from bnsuite.adapters.torch_bn import TorchBatchNorm


def _adapter(table: dict) -> type:
    return type("UsersBatchNorm", (BatchNormAdapter,), {"id": "users-bn", "capabilities": table})


@pytest.mark.parametrize("adapter_id", list(registry.BUILTIN))
def test_builtin_capabilities_are_known_and_load(adapter_id):
    cls = registry.load(adapter_id)
    table = capabilities.named(cls)
    unknown = set(table) - set(capabilities.KNOWN)
    assert not unknown, f"{adapter_id}: unknown capabilities {sorted(unknown)}; known: {sorted(capabilities.KNOWN)}"
    for name in table:
        assert capabilities.load(cls, name) is not None  # raises CapabilityBroken naming what is wrong


def test_every_capability_with_a_kind_is_known():
    assert set(capabilities.EXPECTS) <= set(capabilities.KNOWN)


def test_absent_capability_is_a_skip_naming_adapter_and_capability():
    with pytest.raises(capabilities.CapabilityAbsent, match=r"users-bn: no 'norms' capability") as e:
        capabilities.load(_adapter({}), "norms")
    assert isinstance(e.value, Unsupported)


@pytest.mark.parametrize("ref, error", [
    ("no_such_module_xyz:Norms", "ModuleNotFoundError"),
    ("bnsuite.adapters.norms:NoSuchClass", "AttributeError"),
    ("bnsuite.adapters.norms", "ValueError"),
    ("bnsuite.adapters.blocks:Blocks", "bnsuite.adapters.norms:NormAdapter"),  # a class of another kind
])
def test_broken_capability_fails_naming_adapter_capability_and_error(ref, error):
    with pytest.raises(capabilities.CapabilityBroken) as e:
        capabilities.load(_adapter({"norms": ref}), "norms")
    message = str(e.value)
    assert "users-bn" in message and "'norms'" in message and error in message, message
    assert not isinstance(e.value, Unsupported), "a broken capability must fail, not skip"


def test_users_adapter_plugs_in_like_a_builtin():
    table = {**TorchBatchNorm.capabilities, "norms": "bnsuite.adapters.norms.torch_norms:TorchNorms"}
    from bnsuite.adapters.norms.torch_norms import TorchNorms

    assert capabilities.load(_adapter(table), "norms") is TorchNorms


def test_a_subclass_inherits_the_table():
    class Wrapper(TorchBatchNorm):
        id = "wrapper"

    assert capabilities.named(Wrapper) == capabilities.named(TorchBatchNorm)


def test_unknown_capability_name_is_a_programming_error():
    with pytest.raises(KeyError, match="unknown capability"):
        capabilities.load(TorchBatchNorm, "no-such-capability")
