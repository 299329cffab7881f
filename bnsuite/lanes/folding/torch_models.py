"""The torch models of the folding lane: built from the canonical weights over a ModuleDict that runs a plan (the torch
network's own forward), their canonical tensors and their BatchNorm's attributes."""

from __future__ import annotations

import numpy as np

from bnsuite.lanes.folding import ops_of


class _Runner:
    """Builds an nn.Module that runs a plan over a ModuleDict (the torch network's own forward)."""

    @staticmethod
    def module(mods, ops):
        import torch

        class Runner(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.mods = mods

            def forward(self, h):
                m = self.mods
                for op in ops:
                    if op[0] in ("conv", "bn", "dense"):
                        h = m[op[1]](h)
                    elif op[0] == "relu":  # a module where the model has one (eager fusion needs it), else the op
                        h = m["relu"](h) if "relu" in m else torch.relu(h)
                    elif op[0] == "gap":
                        h = h.mean(dim=(2, 3))
                return h

        return Runner()


def _subclass_bn():
    import torch

    class BatchNormReLU2d(torch.nn.BatchNorm2d):
        """A BatchNorm2d subclass that adds an activation in its own forward (the shape of timm's BatchNormAct2d)."""

        def forward(self, x):
            return torch.relu(super().forward(x))

    return BatchNormReLU2d


def build(model: str, weights: dict, eps: float, momentum: float):
    """The trained-from model in train mode, loaded with the canonical weights."""
    import torch

    if model == "conv_bn_relu_dense":  # the suite's torch network itself (adapters/nets/torch_net.py)
        from bnsuite.adapters.nets.torch_net import TorchNet

        net = TorchNet(model, weights, dtype="float32", device="cpu", channels_last=False, eps=eps,
                       momentum=momentum, bn_idiom=None, recipe=None)
        return _Runner.module(net.mods, ops_of(model)).train()
    nn = torch.nn
    mods = nn.ModuleDict()
    for op in ops_of(model):
        if op[0] == "conv":
            mods[op[1]] = nn.Conv2d(op[2], op[3], op[4], padding=1)
        elif op[0] == "dense":
            mods[op[1]] = nn.Linear(op[2], op[3])
        elif op[0] == "relu":
            mods["relu"] = nn.ReLU()
        elif op[0] == "bn":
            if model == "linear_bn":
                mods[op[1]] = nn.BatchNorm1d(op[2], eps=eps, momentum=momentum)
            elif model == "conv_bn_subclass":
                mods[op[1]] = _subclass_bn()(op[2], eps=eps, momentum=momentum)
            elif model == "conv_bn_no_affine":
                mods[op[1]] = nn.BatchNorm2d(op[2], eps=eps, momentum=momentum, affine=False,
                                             track_running_stats=False)
            else:
                mods[op[1]] = nn.BatchNorm2d(op[2], eps=eps, momentum=momentum)
    with torch.no_grad():
        for name, t in tensors(mods, model).items():
            if t is not None and name in weights:
                t.copy_(torch.as_tensor(weights[name], dtype=t.dtype))
    return _Runner.module(mods, ops_of(model)).train()


def tensors(mods, model: str) -> dict:
    out = {}
    for op in ops_of(model):
        if op[0] not in ("conv", "dense", "bn"):
            continue
        m = mods[op[1]]
        if op[0] in ("conv", "dense"):
            out[f"{op[1]}.kernel"], out[f"{op[1]}.bias"] = m.weight, m.bias
        elif op[0] == "bn":
            out[f"{op[1]}.scale"], out[f"{op[1]}.offset"] = m.weight, m.bias
            out[f"{op[1]}.mean"], out[f"{op[1]}.var"] = m.running_mean, m.running_var
    return out


def bn_attrs(bn) -> dict:
    return {"eps": float(bn.eps), "momentum": bn.momentum, "training": bool(bn.training), "affine": bool(bn.affine),
            "track_running_stats": bool(bn.track_running_stats)}


def np_(t) -> np.ndarray:
    return t.detach().double().numpy().copy()


def quantizable_net(trained):
    """The trained network (conv -> BN -> relu -> mean over H, W -> dense) with the quantization stubs eager
    quantization needs: quantize the input, dequantize before the (float) mean, quantize again before the dense layer,
    dequantize its output. The conv is rebuilt with padding=1, which for its 3x3 kernel at stride 1 is padding="same"
    (QAT's ConvBn2d cannot take "same": the finding torch_qat_convbn_same_padding_typeerror); its weights are copied."""
    import copy

    import torch
    from torch.ao.quantization import DeQuantStub, QuantStub

    src = trained.mods
    conv = torch.nn.Conv2d(src["conv"].in_channels, src["conv"].out_channels, src["conv"].kernel_size, padding=1)
    conv.load_state_dict(src["conv"].state_dict())

    class QuantizableNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.conv, self.bn, self.relu = QuantStub(), conv, copy.deepcopy(src["bn"]), torch.nn.ReLU()
            self.dequant, self.quant_dense, self.dense = DeQuantStub(), QuantStub(), copy.deepcopy(src["dense"])
            self.dequant_out = DeQuantStub()

        def forward(self, x):
            h = self.dequant(self.relu(self.bn(self.conv(self.quant(x))))).mean(dim=(2, 3))
            return self.dequant_out(self.dense(self.quant_dense(h)))

    return QuantizableNet().train(trained.training)


def net_tensors(net) -> dict:
    """The canonical tensors of a quantizable_net (or of its QAT-prepared form, whose fused conv holds the bn)."""
    conv = net.conv
    bn = conv.bn if hasattr(conv, "bn") else net.bn
    return {"conv.kernel": conv.weight, "conv.bias": conv.bias, "bn.scale": bn.weight, "bn.offset": bn.bias,
            "bn.mean": bn.running_mean, "bn.var": bn.running_var, "dense.kernel": net.dense.weight,
            "dense.bias": net.dense.bias}
