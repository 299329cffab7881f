"""The network suites' shared setup: the small training network, its hyperparameters, its fixed training data and
building a network in the adapter's framework (a skip when the adapter cannot).

Used by test_network_equivalence.py, test_finetune.py and test_deep_batch_size.py, so that no test module imports
another.
"""

from __future__ import annotations

import numpy as np
import pytest

from bnsuite.adapters import capabilities, nets
from bnsuite.adapters.base import Unsupported
from bnsuite.adapters.nets.reference_net import IMAGE, IN_CHANNELS, OUT_FEATURES
from bnsuite.suites import data

ARCH = "conv_bn_relu_dense"  # the training network: conv 3x3 -> BN -> ReLU -> global average pool -> dense
BATCH = 8
LR = 0.1
EPS = 1e-3
MOMENTUM = 0.1


def fixed_batches(dtype: str, channels_last: bool, k: int, seed: int = 11, batch: int = BATCH):
    """k (input, target) pairs, rounded to dtype; inputs with a per-channel offset so the BN has work to do."""
    rng = np.random.default_rng(data.seed_for(seed))
    out = []
    for _ in range(k):
        x = rng.standard_normal((batch, IN_CHANNELS, *IMAGE)) * 1.5 + rng.uniform(-1, 1, (1, IN_CHANNELS, 1, 1))
        t = rng.standard_normal((batch, OUT_FEATURES))
        x = data.representable(x, dtype)
        out.append((np.moveaxis(x, 1, -1).copy() if channels_last else x, data.representable(t, dtype)))
    return out


def build(case, arch, weights, channels_last, bn_idiom=None, eps=EPS, momentum=MOMENTUM):
    """`arch` in the case's framework with the canonical `weights`; skips the case where the adapter has no network
    or cannot express the request, and FAILS where a declared freeze idiom (`bn_idiom`) cannot run on it."""
    __tracebackhide__ = True
    try:
        return nets.build_network(case.adapter, arch, weights, dtype=case.dtype, device=case.device,
                                  channels_last=channels_last, eps=eps, momentum=momentum, bn_idiom=bn_idiom)
    except Unsupported as e:
        if bn_idiom is not None and not isinstance(e, capabilities.CapabilityAbsent):
            pytest.fail(f"{case.adapter.id}: declared freeze idiom {bn_idiom!r} cannot run on its network: {e}",
                        pytrace=False)
        case.skip_refused(e)
