"""Correct BatchNorm layers whose real architectures (bnsuite/models, the "models" capability) are broken in one way."""

from __future__ import annotations

from bnsuite.adapters.base import Cited
from bnsuite.adapters.torch_bn import TorchBatchNorm
from bnsuite.models import Moves
from bnsuite.models.torch_models import TorchModels


class BatchStatsFirstBnModels(TorchModels):
    """torchvision's ResNet-18 whose first BatchNorm keeps no running statistics, so it normalizes with batch
    statistics in inference too."""

    architectures = {"resnet18": TorchModels.architectures["resnet18"]}

    def build(self, arch, seed=0):
        import torch

        model = super().build(arch, seed)
        bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        bn.track_running_stats, bn.running_mean, bn.running_var = False, None, None
        return model


class FolkloreFreezeModels(TorchModels):
    """torchvision's ResNet-18 under declarations of the folklore: requires_grad_(False) freezes the running
    statistics, and eval() freezes scale and offset."""

    architectures = {"resnet18": TorchModels.architectures["resnet18"]}
    freeze_idioms = {
        "requires_grad_false": Cited(Moves("none", "none", "none"), "deliberately wrong (folklore)"),
        "model_eval": Cited(Moves("none", "none", "none"), "deliberately wrong (folklore)"),
    }


BATCH_STATS_FIRST_BN = BatchStatsFirstBnModels()
FOLKLORE_FREEZE = FolkloreFreezeModels()


def _with_models(name: str, adapter_id: str, models) -> type:
    return type(name, (TorchBatchNorm,), {
        "__doc__": f"A correct torch BatchNorm whose real architectures are broken: {type(models).__doc__}",
        "__module__": __name__, "__qualname__": name, "id": adapter_id,
        "capabilities": {**getattr(TorchBatchNorm, "capabilities", {}), "models": ref(models)}})


def ref(obj) -> str:
    """"module:NAME" of a module-level instance (the capability names an object, not a class)."""
    names = {id(v): k for k, v in globals().items()}
    return f"{__name__}:{names[id(obj)]}"


BatchStatsModels = _with_models("BatchStatsModels", "broken-models-batch-stats", BATCH_STATS_FIRST_BN)
FolkloreFreeze = _with_models("FolkloreFreeze", "broken-models-freeze", FOLKLORE_FREEZE)

EXPECTED_FAILURES = {
    BatchStatsModels: {"real_model_inference_batch_size_invariance",
                       "real_model_batchnorm_introduces_no_batch_dependence"},
    FolkloreFreeze: {"real_model_freeze_stats_moved", "real_model_freeze_scale_moved",
                     "real_model_freeze_offset_moved"},
}
