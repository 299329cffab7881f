"""Training loops (suites/test_training_loops.py): torch's loops with one thing wrong, under torch's declarations."""

from __future__ import annotations

import dataclasses

from bnsuite.adapters.base import Cited
from bnsuite.lanes.loops import torch_loops
from bnsuite.lanes.loops.torch_loops import TorchLoops
from meta_tests.broken.base import torch_with


class StaleAveragedStatistics(TorchLoops):
    """The averaged model keeps the running statistics it was copied with (stale) while declaring them averaged."""

    @classmethod
    def average(cls, adapter_cls, idiom, spec, state, batches, cotangents, lr):
        run = super().average(adapter_cls, idiom, spec, state, batches, cotangents, lr)
        if torch_loops.SWA_IDIOMS[idiom] == (True, False):  # use_buffers=True, no update_bn: declared "averaged"
            run.averaged.mean, run.averaged.var = state.mean.copy(), state.var.copy()
        return run


class LastWeightsNotAveraged(TorchLoops):
    """The averaged model holds the last weights instead of their average."""

    @classmethod
    def average(cls, adapter_cls, idiom, spec, state, batches, cotangents, lr):
        run = super().average(adapter_cls, idiom, spec, state, batches, cotangents, lr)
        run.averaged.scale, run.averaged.offset = run.live.scale.copy(), run.live.offset.copy()
        return run


class StatisticsUpdatedOnce(TorchLoops):
    """Accumulation moves the running statistics once (with the last micro-batch) instead of k times."""

    @staticmethod
    def _step(torch, module, pairs, lr, dtype):
        opt = torch.optim.SGD(module.parameters(), lr=lr)
        opt.zero_grad()
        momentum = module.momentum
        for i, (x, dy) in enumerate(pairs):
            module.momentum = momentum if i == len(pairs) - 1 else 0.0  # momentum 0: the statistics stay
            y = module(torch.as_tensor(x, dtype=dtype))
            ((y * torch.as_tensor(dy, dtype=dtype)).sum() / x.shape[0] / len(pairs)).backward()
        module.momentum = momentum
        opt.step()


class LossNotScaledByK(TorchLoops):
    """Accumulation sums the k micro-batch gradients (the loss is not divided by k)."""

    @staticmethod
    def _step(torch, module, pairs, lr, dtype):
        opt = torch.optim.SGD(module.parameters(), lr=lr)
        opt.zero_grad()
        for x, dy in pairs:
            y = module(torch.as_tensor(x, dtype=dtype))
            ((y * torch.as_tensor(dy, dtype=dtype)).sum() / x.shape[0]).backward()
        opt.step()


class EmaFromInitialDeclared(TorchLoops):
    """SWA's equal average of the snapshots declared as an EMA that starts from the weights before the first step."""

    averaging = {"swa_use_buffers_true": Cited(dataclasses.replace(TorchLoops.averaging["swa_use_buffers_true"].value,
                                                                   params="ema-from-initial", decay=0.5),
                                               "deliberately wrong")}


LoopsStaleAverage = torch_with("LoopsStaleAverage", "broken-loops-stale-average",
                               training_loops=StaleAveragedStatistics)
LoopsLastWeights = torch_with("LoopsLastWeights", "broken-loops-last-weights", training_loops=LastWeightsNotAveraged)
LoopsStatisticsOnce = torch_with("LoopsStatisticsOnce", "broken-loops-statistics-once",
                                 training_loops=StatisticsUpdatedOnce)
LoopsUnscaledLoss = torch_with("LoopsUnscaledLoss", "broken-loops-unscaled-loss", training_loops=LossNotScaledByK)

LoopsEmaFromInitial = torch_with("LoopsEmaFromInitial", "broken-loops-ema-from-initial",
                                 training_loops=EmaFromInitialDeclared)

EXPECTED_FAILURES = {
    LoopsStaleAverage: {"averaging_running_stats", "averaging_running_mean", "averaging_running_var"},
    LoopsLastWeights: {"averaging_scale", "averaging_offset"},
    LoopsStatisticsOnce: {"accumulation_statistics_updates", "accumulation_running_mean", "accumulation_running_var"},
    LoopsUnscaledLoss: {"accumulation_scale", "accumulation_offset", "accumulation_gradient_gap"},
    LoopsEmaFromInitial: {"averaging_running_stats", "averaging_running_mean", "averaging_running_var",
                          "averaging_scale", "averaging_offset"},
}
