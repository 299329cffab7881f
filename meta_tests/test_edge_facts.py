"""The declared edge-input facts (bnsuite/adapters/edge_facts.py) are well formed: known keys (a typo would turn a
case into a silent skip), a cited source for each, values in the vocabulary the suite observes, and every key asked
for by the suite."""

import os
import re

from bnsuite.adapters import capabilities, edge_facts, registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALUE = re.compile(r"^(error:[A-Za-z_]+Error|empty output, running stats (unchanged|nan|changed)|"
                   r"accepted, constant channel -> (nan|offset|inf|other)|(masked|unmasked) statistics, "
                   r"(biased|unbiased) variance|(contiguous|strided) ghost batches|whole batch|"
                   r"(mean of ghost-batch|whole-batch) moments, (biased|unbiased)|supported|"
                   r"(batch|running) statistics)$")


def _tables() -> dict:
    return {adapter_id: capabilities.load(registry.load(adapter_id), "edge_facts") for adapter_id in registry.BUILTIN}


def test_every_builtin_adapter_has_facts():
    assert all(_tables().values())


def test_facts_use_known_keys_cited_values():
    for adapter_id, facts in _tables().items():
        for key, cited in facts.items():
            assert key in edge_facts.KEYS, f"{adapter_id}: unknown edge-input key {key!r}"
            assert cited.source.strip(), f"{adapter_id}: {key} cites no source"
            assert VALUE.match(cited.value), f"{adapter_id}: {key} = {cited.value!r} is not an observable value"


def test_suite_asks_for_every_key():
    with open(os.path.join(ROOT, "bnsuite", "suites", "test_edge_inputs.py")) as f:
        text = f.read()
    literal = {k for k in edge_facts.KEYS if f'"{k}"' in text}
    composed = {k for k in edge_facts.KEYS if k.startswith("use_running_average_")}  # built from the modes
    assert literal | composed == set(edge_facts.KEYS), sorted(set(edge_facts.KEYS) - literal - composed)


def test_wrapper_inherits_facts_of_nearest_builtin():
    from bnsuite.adapters.torch_bn import TorchBatchNorm

    class Wrapper(TorchBatchNorm):
        id = "wrapper-of-torch"

    assert capabilities.load(Wrapper, "edge_facts") is edge_facts.TORCH
