"""Inputs and options that break BatchNorm (suites/test_edge_inputs.py): non-finite values, an empty batch, eps <= 0,
extreme values, masks, ghost batches, several axes, the construction-time mode."""

from __future__ import annotations

import numpy as np

from bnsuite.adapters import edge_facts
from bnsuite.adapters.base import Unsupported
from bnsuite.adapters.torch_bn import TorchBatchNorm
from meta_tests.broken.base import ConvertsSpec, wrong


class NanSpillsAcrossChannels(TorchBatchNorm):
    """A NaN or inf in one channel of a training batch reaches every channel (a reduction over the whole tensor leaks
    into each channel's output and running statistics), while the oracle keeps it in its channel."""

    id = "broken-nan-spills"

    def forward(self, x, training):
        y = super().forward(x, training)
        if training is True and not np.isfinite(x).all():
            leak = 0.0 * float(np.sum(x))  # NaN
            y = y + leak
            with self.torch.no_grad():
                self.module.running_mean.add_(leak)
                self.module.running_var.add_(leak)
        return y


class EmptyBatchPoisonsStats(TorchBatchNorm):
    """An empty batch sets the running statistics to NaN in either mode, while declaring torch's 'unchanged'."""

    id = "broken-empty-batch"

    def forward(self, x, training):
        y = super().forward(x, training)
        if x.size == 0:
            with self.torch.no_grad():
                self.module.running_mean.fill_(float("nan"))
                self.module.running_var.fill_(float("nan"))
        return y


class EpsClampedSilently(ConvertsSpec):
    """Replaces eps <= 0 by 1e-5 without a word, while declaring torch's ValueError."""

    id = "broken-eps-clamped"

    @staticmethod
    def convert(spec):
        return spec.replace(eps=1e-5) if spec.eps <= 0 else spec


class InferenceInHalf(TorchBatchNorm):
    """Inference computed in float16 (a half-precision kernel): outputs beyond 65504 overflow to inf and every
    output keeps only 11 bits."""

    id = "broken-inference-half"

    def forward(self, x, training):
        y = super().forward(x, training)
        if training is False:
            y = y.astype(np.float16).astype(np.float64)
        return y


class EmptyBatchAndEpsMishandled(EmptyBatchPoisonsStats, EpsClampedSilently):
    """Both breakages above in one adapter: each shows only on its own input (an empty batch, eps <= 0), and one
    adapter runs the whole suite once instead of twice (each broken adapter costs a full suite run in the meta test)."""

    id = "broken-empty-batch-and-eps"


def _torch_edge_facts(**declared):
    """torch's edge facts with `declared` ones changed."""
    return {**edge_facts.TORCH, **{k: wrong(v) for k, v in declared.items()}}


def _facts(name: str) -> dict[str, str]:
    """An adapter's capabilities with its "edge_facts" the table `name` of this module."""
    return {**TorchBatchNorm.capabilities, "edge_facts": f"{__name__}:{name}"}


MASK_IGNORED_FACTS = _torch_edge_facts(**{k: "masked statistics, unbiased variance"
                                          for k in ("mask_NLC", "mask_NLC_one_channel", "mask_NHWC", "mask_NCL",
                                                    "mask_NCHW")})
GHOST_BATCHES_FACTS = _torch_edge_facts(virtual_batch_grouping="strided ghost batches",
                                        virtual_batch_running_stats="mean of ghost-batch moments, biased")
SEVERAL_AXES_FACTS = _torch_edge_facts(several_axes="supported")
CONSTRUCTED_MODE_FACTS = {**edge_facts.TORCH, **{k: v for k, v in edge_facts.FLAX_NNX_OPTIONS.items()
                                                 if k.startswith("use_running_average")}}
EDGE_OPTIONS_FACTS = {**MASK_IGNORED_FACTS, **GHOST_BATCHES_FACTS, **SEVERAL_AXES_FACTS, **CONSTRUCTED_MODE_FACTS}


class MaskIgnored(TorchBatchNorm):
    """Accepts a mask and ignores it (statistics over every position), while declaring masked statistics."""

    id = "broken-mask-ignored"
    capabilities = _facts("MASK_IGNORED_FACTS")

    def forward_masked(self, x, mask, training):
        return self.forward(x, training)


class ContiguousGhostBatches(TorchBatchNorm):
    """Ghost batches of contiguous samples, each updating the running statistics in turn, while declaring tf_keras'
    strided ghost batches and their averaged biased moments."""

    id = "broken-ghost-batches"
    capabilities = _facts("GHOST_BATCHES_FACTS")
    _vbs = None

    def rebuild_with_virtual_batch_size(self, virtual_batch_size):
        self.module.reset_parameters()
        self._vbs = virtual_batch_size

    def forward(self, x, training):
        if training is not True or self._vbs is None:
            return super().forward(x, training)
        return np.concatenate([super(ContiguousGhostBatches, self).forward(x[i:i + self._vbs], True)
                               for i in range(0, x.shape[0], self._vbs)])


class SeveralAxesReshapeBug(TorchBatchNorm):
    """BatchNorm over (width, channel) of NHWC by flattening the feature axes in the wrong order: the statistics are
    computed channel-major and the output is reshaped back without undoing the swap."""

    id = "broken-several-axes"
    capabilities = _facts("SEVERAL_AXES_FACTS")
    _shape = None

    def rebuild_with_axes(self, axes, x_shape):
        if tuple(axes) != (2, 3) or len(x_shape) != 4:
            raise Unsupported("this broken adapter flattens (width, channel) of NHWC only")
        n_w, n_c = x_shape[2], x_shape[3]
        self.module = self.torch.nn.BatchNorm1d(n_w * n_c, eps=self.spec.eps, momentum=self.spec.momentum,
                                                dtype=getattr(self.torch, self.spec.dtype))
        self._shape = x_shape

    def forward(self, x, training):
        if self._shape is None:
            return super().forward(x, training)
        n, h, w, c = x.shape
        flat = np.swapaxes(x, 2, 3).reshape(n * h, c * w)  # channel-major features
        self.module.train(bool(training))
        with self.torch.no_grad():
            y = self.module(self.torch.as_tensor(flat, dtype=self.module.weight.dtype))
        return y.double().numpy().reshape(n, h, w, c)  # the swap is not undone


class ConstructedModeWins(TorchBatchNorm):
    """A use_running_average given at construction wins over the call's, while declaring flax.nnx's (the call
    wins)."""

    id = "broken-constructed-mode"
    capabilities = _facts("CONSTRUCTED_MODE_FACTS")

    def forward_constructed_mode(self, x, constructed, call):
        saved = self.get_state()
        y = self.forward(x, training=not constructed)
        self.set_state(saved)
        return y


class EdgeOptionsMishandled(MaskIgnored, ContiguousGhostBatches, SeveralAxesReshapeBug, ConstructedModeWins):
    """The four option breakages above in one adapter: each lives in its own optional method (a mask, ghost batches,
    several axes, the construction-time mode) and shows only in its own test; one suite run instead of four."""

    id = "broken-edge-options"
    capabilities = _facts("EDGE_OPTIONS_FACTS")


EXPECTED_FAILURES = {
    NanSpillsAcrossChannels: {"nonfinite_stays_in_its_channel", "nonfinite_running_stats_other_channels",
                              "nonfinite_poisoned_running_stats", "nonfinite_inference_afterwards"},
    EmptyBatchAndEpsMishandled: {"empty_batch_training", "empty_batch_inference", "eps_zero", "eps_negative",
                                 "nonpositive_eps_other_channels"},
    InferenceInHalf: {"extreme_inference_output"},
    EdgeOptionsMishandled: {"masked_batch_statistics", "virtual_batch_grouping", "virtual_batch_running_stats",
                            "several_axes_training_output", "several_axes_running_stats",
                            "use_running_average_constructed_and_called"},
}
