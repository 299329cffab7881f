"""torchvision's architectures with random weights (weights=None), statistics collected on seeded data.

torchvision 0.28.0 is the release built against torch 2.13.0; PyPI's wheel links its C++ operators against the CUDA
build of torch, so beside the CPU wheel its extension does not load and `import torchvision` raises "operator
torchvision::nms does not exist" (torchvision/_meta_registrations.py registers fake kernels for nms and qnms without
the `_has_ops()` guard its other registrations have; upstream pytorch/vision#9085, closed, and the guard of
pytorch/vision#9086, closed unmerged). The architectures need no C++ operator: where that import fails,
`_import_torchvision` declares the two operator schemas (schemas only; calling them still raises) and imports again.
"""

from __future__ import annotations

import sys

import numpy as np

from bnsuite.adapters.base import Cited
from bnsuite.models import CLASSES, Moves, stat_batches

_TV = "torchvision/models/{}.py: {}(weights=None, num_classes=10)"
_BN = "torch/nn/modules/batchnorm.py: _BatchNorm.forward"


def _import_torchvision():
    import torch

    try:
        import torchvision
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        global _SCHEMAS
        _SCHEMAS = torch.library.Library("torchvision", "FRAGMENT")  # kept alive: the schemas live as long as it
        for op in ("nms", "qnms"):
            _SCHEMAS.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision
    return torchvision


class TorchModels:
    framework = "torch"
    channels_last = False
    architectures = {
        "resnet18": Cited("resnet18", _TV.format("resnet", "resnet18")),
        "resnet50": Cited("resnet50", _TV.format("resnet", "resnet50")),
        "densenet121": Cited("densenet121", _TV.format("densenet", "densenet121")),
        "mobilenet_v2": Cited("mobilenet_v2", _TV.format("mobilenetv2", "mobilenet_v2")),
        "mobilenet_v3": Cited("mobilenet_v3_small", _TV.format("mobilenetv3", "mobilenet_v3_small")),
        "efficientnet_b0": Cited("efficientnet_b0", _TV.format("efficientnet", "efficientnet_b0")),
    }
    freeze_idioms = {
        "requires_grad_false": Cited(Moves(stats="all", scale="none", offset="none"),
                                     f"{_BN}: the running statistics update whenever self.training and "
                                     "track_running_stats; requires_grad is not consulted"),
        "bn_eval_and_requires_grad_false": Cited(Moves(stats="none", scale="none", offset="none"),
                                                 f"{_BN}: bn_training is False in eval(), so F.batch_norm gets "
                                                 "training=False and no running statistics; no gradient, no step"),
        "model_eval": Cited(Moves(stats="none", scale="all", offset="all"),
                            f"{_BN}: eval() normalizes with the running statistics; weight and bias still require "
                            "grad, so the optimizer moves them"),
    }

    def versions(self) -> dict:
        import torch

        return {"torch": torch.__version__, "torchvision": _import_torchvision().__version__}

    def build(self, arch: str, seed: int = 0):
        import torch

        tv = _import_torchvision()
        torch.manual_seed(seed)
        model = getattr(tv.models, self.architectures[arch].value)(weights=None, num_classes=CLASSES)
        bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.momentum = None  # cumulative average over the collection batches, then the model's own momentum
        model.train()
        with torch.no_grad():
            for x in stat_batches(seed):
                model(torch.from_numpy(self.native(x)))
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        return model.eval()

    def native(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(x, -1, 1))

    def infer(self, model, x: np.ndarray) -> np.ndarray:
        import torch

        model.eval()
        with torch.no_grad():
            return model(torch.from_numpy(self.native(x))).double().numpy()

    def probe_target(self, model):
        return model.eval()

    def fan_ins(self, model) -> list[int]:
        """Terms per output of every convolution and dense kernel (in_channels / groups x kernel area)."""
        import torch

        return [int(m.weight[0].numel()) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]

    def freeze_step(self, model, idiom: str, x: np.ndarray, t: np.ndarray):
        """One SGD step (lr 0.1, cross-entropy) of the classifier under `idiom`; the head always trains."""
        import torch

        head = _head(model)
        head_params = {id(p) for p in head.parameters()}
        bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        model.train()
        if idiom in ("requires_grad_false", "bn_eval_and_requires_grad_false"):
            for p in model.parameters():
                p.requires_grad_(id(p) in head_params)
        if idiom == "bn_eval_and_requires_grad_false":
            for m in bns:
                m.eval()
        if idiom == "model_eval":
            model.eval()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(self.native(x))),
                                                 torch.from_numpy(t.argmax(-1)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return model.eval()


def _head(model):
    """The classifier: the last Linear module (fc in ResNet, the last of `classifier` elsewhere)."""
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]


MODELS = TorchModels()
