"""Mixed precision (suites/test_mixed_precision.py): torch's idioms run with one thing wrong, or declared wrongly."""

from __future__ import annotations

import dataclasses

from bnsuite.adapters.mixed_precision import torch_mixed
from bnsuite.adapters.mlx_bn import MlxBatchNorm
from bnsuite.adapters.torch_bn import TorchBatchNorm
from meta_tests.broken.base import torch_with, wrong


def _stats_in_input_dtype(module, dtype):
    """Running statistics stored in the activations' dtype; scale/offset stay float32 and are cast per call."""
    import torch.nn.functional as F

    module.running_mean.data = module.running_mean.data.to(dtype)
    module.running_var.data = module.running_var.data.to(dtype)
    module.forward = lambda x: F.batch_norm(x, module.running_mean, module.running_var, module.weight.to(dtype),
                                            module.bias.to(dtype), module.training, module.momentum, module.eps)


def stats_in_input_dtype_step(cls, idiom, spec, state, x):
    """Under mixed precision, stores the running statistics in the input dtype while declaring float32."""
    return torch_mixed.step(cls, idiom, spec, state, x, prepare=_stats_in_input_dtype)


def _drops_scale(module, dtype):
    """The mixed-precision path loses the loaded scale (weight reset to 1)."""
    module.weight.data.fill_(1.0)


def drops_scale_step(cls, idiom, spec, state, x):
    """Under mixed precision, normalizes without the layer's scale."""
    return torch_mixed.step(cls, idiom, spec, state, x, prepare=_drops_scale)


MixedStatsInInputDtype = torch_with("MixedStatsInInputDtype", "broken-mixed-stats-in-input-dtype",
                                    mixed_precision=stats_in_input_dtype_step)
MixedDropsScale = torch_with("MixedDropsScale", "broken-mixed-drops-scale", mixed_precision=drops_scale_step)


class MixedWrongDeclarations(TorchBatchNorm):
    """torch's mixed-precision behaviour under declarations that get the output dtype, the parameter dtype and the
    support of an idiom wrong."""

    id = "broken-mixed-declarations"

    @classmethod
    def declare(cls):
        d = super().declare()
        mixed = dict(d.mixed_precision)
        mixed["autocast-bfloat16"] = wrong(dataclasses.replace(mixed["autocast-bfloat16"].value, output="float32",
                                                               params="bfloat16"))
        mixed["defaults-float16"] = wrong(dataclasses.replace(mixed["defaults-float16"].value,
                                                              supported="error:RuntimeError"))
        return dataclasses.replace(d, mixed_precision=mixed)


class MlxMixedMeanKept(MlxBatchNorm):
    """Declares that MLX's float16 batch mean stays finite where its float16 sum overflows (as NumPy's float32
    intermediates keep it): the real layer's NaN outputs on wide float16 activations must fail."""

    id = "broken-mlx-mixed-mean-kept"

    @classmethod
    def declare(cls):
        decl = super().declare()
        rule = decl.mixed_precision["defaults-float16"].value
        return dataclasses.replace(decl, mixed_precision={
            **decl.mixed_precision, "defaults-float16": wrong(dataclasses.replace(rule, mean_sum_overflows=False))})


EXPECTED_FAILURES = {
    MlxMixedMeanKept: {"mixed_wide_training_output"},
    MixedStatsInInputDtype: {"mixed_state_dtype", "mixed_state_dtype_after_training", "mixed_running_mean",
                             "mixed_running_var", "mixed_wide_running_var_finite", "mixed_wide_running_var"},
    MixedDropsScale: {"mixed_training_output", "mixed_inference_output", "mixed_wide_training_output"},
    MixedWrongDeclarations: {"mixed_output_dtype", "mixed_params_dtype", "mixed_supported"},
}
