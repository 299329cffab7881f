"""Correct BatchNorm layers whose deploy lane (bnsuite.lanes.deploy) is broken in one way: an exporter that bakes the
example batch's statistics into an inference graph, and a folding that drops eps. Each serves one route only (the
TorchScript exporter in eval mode into ONNX Runtime without optimizations), which keeps the meta test short."""

from __future__ import annotations

import copy

from bnsuite.adapters.torch_bn import TorchBatchNorm
from bnsuite.lanes.deploy import Route
from bnsuite.lanes.deploy.torch_deploy import TorchDeploy
from meta_tests.broken.base import ref, wrong

ROUTES = (Route("torch.onnx-ts", "eval", "ort-off"),)


class BakedStatsDeploy(TorchDeploy):
    """Exports an inference graph whose running statistics are the example batch's own mean and biased variance."""

    routes = ROUTES

    def export(self, model, exporter, mode, folder, example):
        import torch

        baked = copy.copy(model)
        baked.handle = copy.deepcopy(model.handle)
        x = torch.as_tensor(example, dtype=torch.float32)
        bns = [m for m in baked.handle.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        n = x.numel() // x.shape[1]  # values per channel, the same for every BN here (the conv keeps H, W)
        saved = [m.momentum for m in bns]
        with torch.no_grad():
            for m in bns:
                m.momentum, m.training = 1.0, True  # one training forward leaves exactly the batch's statistics
            baked.handle(x)
            for m, momentum in zip(bns, saved):
                m.running_var.mul_((n - 1) / n)  # the biased variance, the one a batch normalizes with
                m.momentum = momentum
        return super().export(baked, exporter, mode, folder, example)


class EpsDroppingFold(TorchDeploy):
    """Folds every BatchNorm into the convolution before it (torch.nn.utils.fusion.fuse_conv_bn_eval) as if eps were
    0, and a lone BatchNorm exports with eps 0."""

    routes = ROUTES

    def export(self, model, exporter, mode, folder, example):
        import torch

        folded = copy.copy(model)
        folded.handle = copy.deepcopy(model.handle).eval()
        mods = getattr(folded.handle, "mods", None)
        for m in folded.handle.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eps = 0.0
        if mods is not None:
            from torch.nn.utils.fusion import fuse_conv_bn_eval

            mods["conv"] = fuse_conv_bn_eval(mods["conv"], mods["bn"])
            mods["bn"] = torch.nn.Identity()
        return super().export(folded, exporter, mode, folder, example)


class MomentumMisportDeploy(TorchDeploy):
    """A training-mode export whose BatchNormalization node carries torch's momentum (the weight of the NEW
    statistic) where ONNX reads the weight of the old value."""

    routes = (Route("torch.onnx-ts", "training", "ort-off"),)

    def export(self, model, exporter, mode, folder, example):
        import onnx

        exp = super().export(model, exporter, mode, folder, example)
        proto = onnx.load(exp.path)
        for node in proto.graph.node:
            for a in node.attribute:
                if node.op_type == "BatchNormalization" and a.name == "momentum":
                    a.f = 1.0 - a.f
        onnx.save(proto, exp.path)
        return exp


class WrongDeclarationsDeploy(TorchDeploy):
    """The correct eval export declared wrongly: a training-mode node, no BatchNormalization node, a fixed batch
    dimension, a torch.export that works after fp32_precision = "ieee" and backend flags it would leave alone."""

    routes = ROUTES

    def declared(self, exporter, mode, model):
        import dataclasses

        right = super().declared(exporter, mode, model)
        return dataclasses.replace(right, statistics=wrong("batch"), dynamic_batch=wrong(False),
                                   bn_node=wrong("BatchNormalization" if right.bn_node.value == "none" else "none"))

    def traps(self):
        return {prop: (wrong("exports"), observe) for prop, (_, observe) in super().traps().items()}

    def declared_folding(self, route, model):
        right = super().declared_folding(route, model)
        return wrong("folded" if right.value != "folded" else "BatchNorm kept")


def _adapter(name: str, adapter_id: str, lane: type) -> type:
    return type(name, (TorchBatchNorm,), {
        "__doc__": f"A correct torch BatchNorm whose deploy lane is broken: {lane.__doc__}", "__module__": __name__,
        "__qualname__": name, "id": adapter_id,
        "capabilities": {**getattr(TorchBatchNorm, "capabilities", {}), "deploy": ref(lane)}})


BakedStatsExport = _adapter("BakedStatsExport", "broken-deploy-baked-stats", BakedStatsDeploy)
EpsDroppedFold = _adapter("EpsDroppedFold", "broken-deploy-eps-dropped", EpsDroppingFold)

MomentumMisport = _adapter("MomentumMisport", "broken-deploy-momentum", MomentumMisportDeploy)
WrongDeployDeclarations = _adapter("WrongDeployDeclarations", "broken-deploy-declarations", WrongDeclarationsDeploy)

EXPECTED_FAILURES = {
    MomentumMisport: {"deploy_momentum_attribute", "deploy_runtime_running_mean",
                      "deploy_runtime_running_var_estimator"},
    WrongDeployDeclarations: {"deploy_bn_node", "deploy_dynamic_batch_dim", "deploy_training_mode_attribute",
                              "deploy_normalizes_with", "deploy_output_vs_oracle", "deploy_output_vs_framework",
                              "deploy_dynamic_batch", "deploy_torch_export_after_fp32_precision_ieee",
                              "deploy_torch_failed_export_leaves_onednn_disabled", "deploy_runtime_folding"},
    BakedStatsExport: {"deploy_normalizes_with", "deploy_output_vs_oracle", "deploy_output_vs_framework",
                       "deploy_dynamic_batch", "deploy_export_keeps_state"},
    EpsDroppedFold: {"deploy_normalizes_with", "deploy_output_vs_oracle", "deploy_output_vs_framework", "deploy_dynamic_batch",
                     "deploy_eps_attribute"},
}

# The traps' property names live in the lanes (declared data), not in the suite.
SEES = {WrongDeployDeclarations: {"test_deploy.py::test_deploy_traps"}}
