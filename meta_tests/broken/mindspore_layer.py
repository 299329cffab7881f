"""Broken MindSpore BatchNorm layers: the real mindspore adapter with ONE conversion or declared value wrong. They run
where mindspore is installed (the lock installs it) and skip, saying so, where it is not."""

from __future__ import annotations

import dataclasses

from bnsuite.adapters.base import Probe
from bnsuite.adapters.mindspore_bn import MindsporeBatchNorm
from meta_tests.broken.base import wrong


class MindsporeMomentumUnconverted(MindsporeBatchNorm):
    """Passes the canonical momentum (weight of the NEW statistic) to mindspore unchanged, although the argument of
    mindspore.nn.BatchNorm2d weights the OLD running value: the slip of a port that reads the layer's `momentum`
    attribute (0.1 for the default 0.9) as the argument's convention."""

    id = "broken-mindspore-momentum-unconverted"

    def __init__(self, spec):
        super().__init__(spec)
        if not spec.use_defaults and spec.momentum is not None:
            self.kwargs["momentum"] = spec.momentum
            self.bn = self._build()


class MindsporeRunningVarBiased(MindsporeBatchNorm):
    """Declares the biased running variance the BatchNorm2d docstring's sigma^2_beta suggests, not the unbiased one
    the CPU kernel stores."""

    id = "broken-mindspore-running-var-biased"

    @classmethod
    def declare(cls):
        return dataclasses.replace(super().declare(), running_var_estimator=wrong({"default": "biased"}))


def _probe_declared(prop: str, value: str):
    """The mindspore adapter's probe `prop` alone (the others cost their own runs elsewhere), declared `value`."""
    return classmethod(lambda cls: [Probe(p.property, wrong(value), p.run) for p in MindsporeBatchNorm.probes()
                                    if p.property == prop])


class MindsporeFloat16StatsMove(MindsporeBatchNorm):
    """Declares that a float16 layer's training step moves its running statistics, as float32's does."""

    id = "broken-mindspore-float16-stats-move"

    probes = _probe_declared("float16_training_updates_running_stats", "running stats move")


class MindsporeSingleValueFiniteVar(MindsporeBatchNorm):
    """Declares that one value per channel leaves a finite running variance, as TensorFlow's biased update does."""

    id = "broken-mindspore-single-value-finite-var"

    probes = _probe_declared("single_value_batch_running_var", "finite")


class MindsporeMomentumAttributeAsArgument(MindsporeBatchNorm):
    """Declares that the layer's `momentum` attribute reads back the constructor's argument (0.9), as torch's does."""

    id = "broken-mindspore-momentum-attribute-as-argument"

    probes = _probe_declared("momentum_attribute_of_default", "0.9")


EXPECTED_FAILURES = {
    MindsporeMomentumUnconverted: {"running_mean", "running_var", "running_var_estimator", "port_momentum_conversion",
                                   "port_running_mean", "port_running_var"},
    MindsporeRunningVarBiased: {"running_var_estimator"},
    MindsporeFloat16StatsMove: {"float16_training_updates_running_stats"},
    MindsporeSingleValueFiniteVar: {"single_value_batch_running_var"},
    MindsporeMomentumAttributeAsArgument: {"momentum_attribute_of_default"},
}

SEES = {cls: {"test_framework_traps.py"} for cls in (MindsporeFloat16StatsMove, MindsporeSingleValueFiniteVar,
                                                     MindsporeMomentumAttributeAsArgument)}
