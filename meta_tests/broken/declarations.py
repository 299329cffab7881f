"""torch's behaviour under a declaration that is wrong: every declared-fact check must fail on its own property."""

from __future__ import annotations

import dataclasses

from bnsuite.adapters.base import FreezeFacts, Probe, Unsupported
from bnsuite.adapters.torch_bn import TorchBatchNorm
from meta_tests.broken.base import WrongDeclaration, wrong


class WrongDefaultEps(WrongDeclaration):
    """Declares Keras' default eps for torch."""

    id = "broken-default-eps"
    wrong_values = {"default_eps": 1e-3}


class NoSingleValueError(WrongDeclaration):
    """Declares that a single value per channel normalizes to the offset, which torch refuses."""

    id = "broken-single-value"
    wrong_values = {"single_value_batch": "offset"}


class RefusesCumulativeAverage(TorchBatchNorm):
    """Declares torch's cumulative moving average (momentum=None) and refuses to build a layer with it."""

    id = "broken-refuses-cumulative-average"

    def __init__(self, spec):
        if spec.momentum is None and not spec.use_defaults:
            raise Unsupported(f"{self.id}: no cumulative average (momentum=None)")
        super().__init__(spec)


class WrongDeclarations(WrongDeclaration):
    """torch behaviour under a declaration that gets defaults, directions, modes, freezing, precision and a trap
    wrong: every declared-fact check must fail on its own property."""

    id = "broken-declarations"
    wrong_values = {"default_momentum": 0.01, "momentum_weights": "old", "default_channels_last": True,
                    "training_default": "inference", "batch_stats_inference": "track_running_stats=False"}

    @classmethod
    def declare(cls):
        d = super().declare()
        freeze = {**d.freeze, "eval": wrong(FreezeFacts("running", True, False)),
                  "no_grad": wrong(FreezeFacts("batch", True, False, error="RuntimeError"))}
        precision = {**d.precision,
                     "float16": wrong(dataclasses.replace(d.precision["float16"].value, output="float32",
                                                          state="float64")),
                     "bfloat16": wrong(dataclasses.replace(d.precision["bfloat16"].value,
                                                           supported="error:TypeError"))}
        return dataclasses.replace(d, freeze=freeze, precision=precision)

    @classmethod
    def probes(cls):
        return [Probe("declared_trap", wrong("error:RuntimeError"), lambda: "ok")]


EXPECTED_FAILURES = {
    WrongDefaultEps: {"default_eps", "default_eps_output", "naive_port_inference_output"},
    RefusesCumulativeAverage: {"cumulative_average"},
    NoSingleValueError: {"single_value_batch"},
    WrongDeclarations: {"default_momentum", "momentum_weights", "default_channels_last", "training_default",
                        "freeze_running_stats_update", "freeze_params_update", "freeze_error",
                        "finetune_bn_running_stats_update", "finetune_bn_params_update", "finetune_error",
                        "precision_output_dtype", "precision_state_dtype", "precision_supported", "declared_trap",
                        "precision_training_output", "precision_inference_output",
                        "precision_state_dtype_after_training"},
}
SEES = {WrongDeclarations: {"test_framework_traps.py"}}  # "declared_trap" is the property of its own declared Probe
