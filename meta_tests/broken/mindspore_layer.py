"""Broken MindSpore BatchNorm layers: the real mindspore adapter with ONE conversion or declared value wrong. They run
where mindspore is installed (the lock installs it) and skip, saying so, where it is not."""

from __future__ import annotations

import dataclasses

from bnsuite.adapters.mindspore_bn import MindsporeBatchNorm
from meta_tests.broken.base import MomentumUnconverted, declaring_probe, wrong


class MindsporeMomentumUnconverted(MomentumUnconverted, MindsporeBatchNorm):
    """Passes the canonical momentum (weight of the NEW statistic) to mindspore unchanged, although the argument of
    mindspore.nn.BatchNorm2d weights the OLD running value: the slip of a port that reads the layer's `momentum`
    attribute (0.1 for the default 0.9) as the argument's convention."""

    id = "broken-mindspore-momentum-unconverted"


class MindsporeRunningVarBiased(MindsporeBatchNorm):
    """Declares the biased running variance the BatchNorm2d docstring's sigma^2_beta suggests, not the unbiased one
    the CPU kernel stores."""

    id = "broken-mindspore-running-var-biased"

    @classmethod
    def declare(cls):
        return dataclasses.replace(super().declare(), running_var_estimator=wrong({"default": "biased"}))


MindsporeFloat16StatsMove = declaring_probe(
    MindsporeBatchNorm, "MindsporeFloat16StatsMove", "broken-mindspore-float16-stats-move",
    "float16_training_updates_running_stats", "running stats move",
    "Declares that a float16 layer's training step moves its running statistics, as float32's does.", __name__)
MindsporeSingleValueFiniteVar = declaring_probe(
    MindsporeBatchNorm, "MindsporeSingleValueFiniteVar", "broken-mindspore-single-value-finite-var",
    "single_value_batch_running_var", "finite",
    "Declares that one value per channel leaves a finite running variance, as TensorFlow's biased update does.",
    __name__)
MindsporeMomentumAttributeAsArgument = declaring_probe(
    MindsporeBatchNorm, "MindsporeMomentumAttributeAsArgument", "broken-mindspore-momentum-attribute-as-argument",
    "momentum_attribute_of_default", "0.9",
    "Declares that the layer's `momentum` attribute reads back the constructor's argument (0.9), as torch's does.",
    __name__)


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
