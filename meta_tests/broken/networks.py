"""Correct BatchNorm layers whose small torch network (adapters/nets) is broken in one way."""

from __future__ import annotations

from bnsuite.adapters.nets import HWIO, torch_net
from meta_tests.broken.base import torch_with, wrong


def wrong_eps_torch_net(adapter_cls, arch, weights, **kw):
    """The torch network with every BatchNorm built with 1000 times the requested eps (1e-2 for 1e-5)."""
    return torch_net.build(adapter_cls, arch, weights, **{**kw, "eps": kw["eps"] * 1000})


def frozen_conv_torch_net(adapter_cls, arch, weights, **kw):
    """The torch network whose convolution and dense weights never train (requires_grad False)."""
    net = torch_net.build(adapter_cls, arch, weights, **kw)
    for module in net.mods.modules():
        if not isinstance(module, net.torch.nn.modules.batchnorm._BatchNorm):
            for p in module.parameters(recurse=False):
                p.requires_grad_(False)
    return net


def batch_stats_torch_net(adapter_cls, arch, weights, **kw):
    """The torch network whose inference normalizes with batch statistics (BatchNorm left in training mode)."""
    net = torch_net.build(adapter_cls, arch, weights, **kw)
    forward = net.forward
    net.forward = lambda x, training: forward(x, True)
    return net


def hwio_layout_torch_net(adapter_cls, arch, weights, **kw):
    """The torch network declaring the channels-last kernel layouts (conv HWIO, dense (in, out)) while it holds torch's
    own: its weights are converted correctly, only the porting guide's claim is wrong."""
    net = torch_net.build(adapter_cls, arch, weights, **kw)
    net.weight_layout = wrong(HWIO)
    return net


BatchStatsNetwork = torch_with("BatchStatsNetwork", "broken-network-batch-stats", network=batch_stats_torch_net)
WrongEpsNetwork = torch_with("WrongEpsNetwork", "broken-network-eps", network=wrong_eps_torch_net)
FrozenConvNetwork = torch_with("FrozenConvNetwork", "broken-network-frozen-conv", network=frozen_conv_torch_net)
HwioLayoutNetwork = torch_with("HwioLayoutNetwork", "broken-network-layout", network=hwio_layout_torch_net)

EXPECTED_FAILURES = {
    WrongEpsNetwork: {"deep_inference_output_vs_reference", "network_inference_output", "network_loss_step1",
                      "network_loss_step2", "network_loss_step3", "network_weight_conv.kernel",
                      "network_weight_bn.scale", "network_weight_bn.offset", "network_weight_bn.mean",
                      "network_weight_bn.var", "network_weight_dense.kernel", "network_weight_dense.bias"},
    BatchStatsNetwork: {"deep_inference_batch_size_invariance"},
    FrozenConvNetwork: {"finetune_conv_dense_update"},
    HwioLayoutNetwork: {"network_weight_layout"},
}
