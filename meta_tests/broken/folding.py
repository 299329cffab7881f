"""Correct torch BatchNorm layers whose folding lane (bnsuite/lanes/folding) is broken in one way."""

from __future__ import annotations

import copy
import dataclasses

from bnsuite.adapters.base import Cited
from bnsuite.adapters.torch_bn import TorchBatchNorm
from bnsuite.lanes.folding import torch_folding as tfold
from meta_tests.broken.base import ref


def _redeclared(path: str, **changes) -> dict:
    """The torch lane's paths with `path`'s declaration changed (deliberately wrong)."""
    models, decl = tfold.PATHS[path]
    return {**tfold.PATHS, path: (models, Cited(dataclasses.replace(decl.value, **changes), "deliberately wrong"))}


def _bn_changed(m, **attrs):
    """A copy of the test model `m` whose BatchNorm has `attrs` set (deliberately wrong)."""
    m = copy.deepcopy(m)
    for name, value in attrs.items():
        setattr(m.mods["bn"], name, value)
    return m


class DropsEpsLane(tfold.TorchFolding):
    """fuse_conv_bn_eval folds with eps = 0: W * gamma / sqrt(var) (the eps of the BatchNorm is dropped)."""

    def _fuse_conv_bn_eval(self, m, model, xt, out, batches):
        super()._fuse_conv_bn_eval(_bn_changed(m, eps=0.0), model, xt, out, batches)


class FreezeMovesStatsLane(tfold.TorchFolding):
    """freeze_bn_stats that leaves the fused module's BatchNorm in training mode: the statistics still move and the
    training-mode output normalizes with the batch's."""

    def _qat(self, m, xt, out, freeze: bool):
        import torch

        if not freeze:
            return super()._qat(m, xt, out, freeze)
        real = torch.ao.nn.intrinsic.qat.freeze_bn_stats

        def leaky_freeze(mod):
            real(mod)
            if hasattr(mod, "bn") and hasattr(mod, "freeze_bn"):
                mod.bn.training = True

        torch.ao.nn.intrinsic.qat.freeze_bn_stats = leaky_freeze
        try:
            super()._qat(m, xt, out, freeze)
        finally:
            torch.ao.nn.intrinsic.qat.freeze_bn_stats = real


class DefaultMomentumQatLane(tfold.TorchFolding):
    """eager QAT whose fused module gets torch's default momentum 0.1 instead of the model's."""

    def _qat_update_bn_stats(self, m, model, xt, out, batches):
        super()._qat_update_bn_stats(_bn_changed(m, momentum=0.1), model, xt, out, batches)


class DefaultsSyncLane(tfold.TorchFolding):
    """convert_sync_batchnorm that builds the SyncBatchNorm with its defaults (eps 1e-5, momentum 0.1, affine and
    track_running_stats True, training mode) instead of the converted layer's."""

    def _convert_sync_batchnorm(self, m, model, xt, out, batches):
        import torch

        super()._convert_sync_batchnorm(m, model, xt, out, batches)
        fresh = torch.nn.SyncBatchNorm(8)
        out.attrs_after = tfold.bn_attrs(fresh)


class FusesInTrainModeLane(tfold.TorchFolding):
    """fuse_modules declared as refusing a train-mode model and folding the BatchNorm away, while it keeps it."""

    paths = _redeclared("fuse_modules", train_model="fuses", folded=False)


class RaisingLane(tfold.TorchFolding):
    """FX fusion that raises on every model."""

    def _fuse_fx(self, m, model, xt, out, batches):
        raise RuntimeError("graph fusion failed")


class SamePaddingLane(tfold.TorchFolding):
    """quantization-aware training declared to run a conv built with padding="same"."""

    qat_same_padding = Cited("runs", "deliberately wrong")


def _adapter(name: str, adapter_id: str, lane: type) -> type:
    return type(name, (TorchBatchNorm,), {"__doc__": f"A correct torch BatchNorm whose folding lane: {lane.__doc__}",
                                          "__module__": __name__, "__qualname__": name, "id": adapter_id,
                                          "capabilities": {**TorchBatchNorm.capabilities, "folding": ref(lane)}})


DropsEpsFolding = _adapter("DropsEpsFolding", "broken-folding-drops-eps", DropsEpsLane)
FreezeMovesStatsFolding = _adapter("FreezeMovesStatsFolding", "broken-folding-freeze-moves-stats",
                                   FreezeMovesStatsLane)
DefaultMomentumQat = _adapter("DefaultMomentumQat", "broken-folding-qat-momentum", DefaultMomentumQatLane)
DefaultsSync = _adapter("DefaultsSync", "broken-folding-sync-defaults", DefaultsSyncLane)
FusesInTrainMode = _adapter("FusesInTrainMode", "broken-folding-train-mode", FusesInTrainModeLane)
SamePaddingQat = _adapter("SamePaddingQat", "broken-folding-qat-same-padding", SamePaddingLane)
RaisingFolding = _adapter("RaisingFolding", "broken-folding-raises", RaisingLane)

EXPECTED_FAILURES = {
    DropsEpsFolding: {"folding_output_vs_oracle", "folding_output_vs_eager"},
    FreezeMovesStatsFolding: {"folding_stats_move", "folding_train_output_stats", "folding_output_vs_eager"},
    DefaultMomentumQat: {"folding_bn_momentum", "folding_running_stats_update"},
    DefaultsSync: {"folding_bn_eps", "folding_bn_momentum", "folding_bn_affine", "folding_bn_track_running_stats",
                   "folding_bn_training"},
    FusesInTrainMode: {"folding_train_model", "folding_bn_folded"},
    RaisingFolding: {"folding_path_runs"},
    SamePaddingQat: {"folding_qat_same_padding"},
}

# Each lane above breaks one path; its cases run on that path only (SamePaddingQat's breakage is outside test_folding).
ONLY_PARAMS = {
    DropsEpsFolding: {"path": ("fuse_conv_bn_eval",)},
    FreezeMovesStatsFolding: {"path": ("qat_freeze_bn_stats",)},
    DefaultMomentumQat: {"path": ("qat_update_bn_stats",)},
    DefaultsSync: {"path": ("convert_sync_batchnorm",)},
    FusesInTrainMode: {"path": ("fuse_modules",)},
    RaisingFolding: {"path": ("fuse_fx",)},
    SamePaddingQat: {"path": ()},
}
