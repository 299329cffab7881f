"""Every built-in multi-replica declaration is complete, uses the known rule names and cites a source for every
idiom (no framework is imported: engines import theirs inside measure)."""

import pytest

from bnsuite.adapters import capabilities, registry
from bnsuite.adapters import replicas as rp

NORMALIZE = {"local", "global", "pairs"}


def _rule_or(value: str, rules, prefixes) -> bool:
    return value in rules or value.startswith(prefixes)


@pytest.mark.parametrize("adapter_id", list(registry.BUILTIN))
def test_replica_declaration_is_complete_and_cited(adapter_id):
    cls = registry.load(adapter_id)
    if "replicas" not in capabilities.named(cls):
        pytest.skip(f"{adapter_id} has no multi-replica engine")
    decl = capabilities.load(cls, "replicas").declare()
    assert decl.default.source.strip() and decl.default.value in NORMALIZE
    assert decl.idioms, f"{adapter_id}: no idioms"
    for name, cited in decl.idioms.items():
        f = cited.value
        assert cited.source.strip(), f"{adapter_id} {name}: no source"
        assert _rule_or(f.normalizes, NORMALIZE, ("error:",)), (name, f.normalizes)
        assert _rule_or(f.running_stats, set(rp.RULES) - {"unweighted"}, ("n/a",)), (name, f.running_stats)
        assert _rule_or(f.gradient, set(rp.GRADIENT_RULES), ("n/a",)), (name, f.gradient)
        for case in rp.SHARD_CASES:
            outcome = getattr(f, case)
            assert outcome == "ok" or outcome.startswith(("error:", "n/a")), (name, case, outcome)
        assert f.shards_normalize in ("", *NORMALIZE, "unweighted"), (name, f.shards_normalize)
        assert f.device in ("cpu", "gpu") and set(f.replica_counts) <= set(rp.REPLICA_COUNTS)
    for key, cited in decl.without_strategy.items():
        assert cited.source.strip(), key


def test_a_plain_adapter_has_no_engine():
    from bnsuite.adapters.base import BatchNormAdapter, Unsupported

    with pytest.raises(Unsupported, match="no 'replicas' capability"):
        capabilities.load(type("Mine", (BatchNormAdapter,), {"id": "mine"}), "replicas")
