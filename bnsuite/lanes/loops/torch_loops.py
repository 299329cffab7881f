"""torch's training loops around BatchNorm: micro-batch gradient accumulation and torch.optim.swa_utils averaging.

Sources are the installed torch (torch/optim/swa_utils.py, torch/nn/modules/batchnorm.py).
"""

from __future__ import annotations

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.lanes.loops import AccumulationRule, AccumulationRun, AveragingRule, AveragingRun, TrainingLoops

_SWA = "torch/optim/swa_utils.py"
_BN = "torch/nn/modules/batchnorm.py"
# idiom -> (use_buffers, update_bn afterwards)
SWA_IDIOMS = {"swa_use_buffers_false": (False, False), "swa_use_buffers_true": (True, False),
              "swa_use_buffers_false_update_bn": (False, True), "swa_use_buffers_true_update_bn": (True, True)}


def _t(torch, a, dtype):
    return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)


class TorchLoops(TrainingLoops):
    accumulation = {
        "micro_batches_loss_over_k": Cited(
            AccumulationRule("every-micro-batch"),
            f"{_BN}: _BatchNorm.forward updates running_mean/running_var (and num_batches_tracked) on every "
            "training-mode forward, whatever the optimizer does; the k backward() calls of (loss / k) add into .grad "
            "(torch/_tensor.py: backward accumulates), so optimizer.step() applies the mean micro-batch gradient"),
    }
    averaging = {
        "swa_use_buffers_false": Cited(
            AveragingRule("equal", "live"),
            f"{_SWA}: AveragedModel.update_parameters averages self.parameters() only and then, 'if not "
            "self.use_buffers', copies every buffer of the model ('keep the buffers in sync with the source model'); "
            "default avg_fn is the equal average (get_swa_multi_avg_fn)"),
        "swa_use_buffers_true": Cited(
            AveragingRule("equal", "averaged"),
            f"{_SWA}: AveragedModel docstring 'use_buffers (bool): if True, it will compute running averages for both "
            "the parameters and the buffers of the model'; update_parameters chains module.buffers() into the "
            "averaged tensors"),
        "swa_use_buffers_false_update_bn": Cited(
            AveragingRule("equal", "recomputed"),
            f"{_SWA}: update_bn calls module.reset_running_stats(), sets momentum=None (cumulative average, "
            f"{_BN}: exponential_average_factor = 1 / num_batches_tracked) and runs one training-mode pass over the "
            "loader"),
        "swa_use_buffers_true_update_bn": Cited(
            AveragingRule("equal", "recomputed"),
            f"{_SWA}: update_bn resets and re-estimates the running statistics whatever use_buffers averaged"),
    }

    @classmethod
    def _layer(cls, adapter_cls, spec, state):
        if spec.rank != 2:
            raise ValueError("the training loops run rank-2 (N, C) inputs")
        bn = adapter_cls(spec)
        bn.set_state(state)
        bn.module.train()
        return bn

    @staticmethod
    def _step(torch, module, pairs, lr, dtype):
        """One SGD step whose gradient is the mean over `pairs` of grad(sum(y * dy) / m): loss / k per pair."""
        opt = torch.optim.SGD(module.parameters(), lr=lr)
        opt.zero_grad()
        for x, dy in pairs:
            y = module(_t(torch, x, dtype))
            ((y * _t(torch, dy, dtype)).sum() / x.shape[0] / len(pairs)).backward()
        opt.step()

    @classmethod
    def accumulate(cls, adapter_cls, idiom, spec, state, micro_batches, cotangents, lr):
        import torch

        if idiom not in cls.accumulation:
            raise KeyError(idiom)
        acc = cls._layer(adapter_cls, spec, state)
        dtype = acc.module.weight.dtype
        cls._step(torch, acc.module, list(zip(micro_batches, cotangents)), lr, dtype)
        large = cls._layer(adapter_cls, spec, state)
        cls._step(torch, large.module, [(np.concatenate(micro_batches), np.concatenate(cotangents))], lr, dtype)
        snippet = ("opt.zero_grad()\nfor x, dy in micro_batches:  # k of them\n    ((bn(x) * dy).sum() / len(x) / k)"
                   ".backward()\nopt.step()  # torch.optim.SGD")
        return AccumulationRun(acc.get_state(), large.get_state(), snippet)

    @classmethod
    def average(cls, adapter_cls, idiom, spec, state, batches, cotangents, lr):
        import torch
        from torch.optim.swa_utils import AveragedModel, update_bn

        use_buffers, recompute = SWA_IDIOMS[idiom]
        bn = cls._layer(adapter_cls, spec, state)
        dtype = bn.module.weight.dtype
        swa = AveragedModel(bn.module, use_buffers=use_buffers)
        for x, dy in zip(batches, cotangents):
            cls._step(torch, bn.module, [(x, dy)], lr, dtype)
            swa.update_parameters(bn.module)
        if recompute:
            update_bn([_t(torch, x, dtype) for x in batches], swa)
        live = bn.get_state()
        bn.module = swa.module  # read the averaged copy through the adapter
        snippet = (f"swa = AveragedModel(bn, use_buffers={use_buffers})\nfor x, dy in batches:\n    sgd_step(bn, x, dy)"
                   f"\n    swa.update_parameters(bn)\n" + ("update_bn(batches, swa)\n" if recompute else ""))
        return AveragingRun(bn.get_state(), live, snippet)
