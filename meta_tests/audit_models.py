"""The small models the audit's meta tests build beside the real architectures: a conv-BN-conv-BN-dense network in
flax.nnx, its torch twin, and the port between them (weights, statistics and conventions converted)."""

import numpy as np


def nnx_net(eps: float = 1e-5, momentum: float = 0.99, seed: int = 0):
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            kw = {"epsilon": eps, "momentum": momentum, "rngs": rngs}
            self.conv1, self.bn1 = nnx.Conv(3, 4, (3, 3), rngs=rngs), nnx.BatchNorm(4, **kw)
            self.conv2, self.bn2 = nnx.Conv(4, 4, (3, 3), rngs=rngs), nnx.BatchNorm(4, **kw)
            self.head = nnx.Linear(4, 2, rngs=rngs)

        def __call__(self, x):
            h = nnx.relu(self.bn1(self.conv1(x)))
            return self.head(nnx.relu(self.bn2(self.conv2(h))).mean(axis=(1, 2)))

    return Net(nnx.Rngs(seed))


def torch_net(x_nchw, seed: int = 0):
    """The torch twin (3x3 convolutions padded by 1, which is nnx's SAME at stride 1), after one training-mode
    forward on x so its running statistics are not the defaults; in eval mode."""
    import torch

    torch.manual_seed(seed)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4)
            self.conv2, self.bn2 = torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4)
            self.head = torch.nn.Linear(4, 2)

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1(x)))
            return self.head(torch.relu(self.bn2(self.conv2(h))).mean(dim=(2, 3)))

    net = Net()
    with torch.no_grad():
        net(torch.as_tensor(x_nchw))
    return net.eval()


def torch_to_nnx(net, naive: bool = False):
    """The nnx network with the torch one's weights and statistics: kernels transposed to HWIO / IO, eps copied,
    momentum converted (1 - torch's); `naive` keeps nnx's default momentum instead."""
    model = nnx_net(eps=net.bn1.eps, momentum=0.99 if naive else 1 - net.bn1.momentum)
    t = lambda p: np.asarray(p.detach().numpy())
    for c in ("conv1", "conv2"):
        getattr(model, c).kernel[...] = np.transpose(t(getattr(net, c).weight), (2, 3, 1, 0))
        getattr(model, c).bias[...] = t(getattr(net, c).bias)
    for b in ("bn1", "bn2"):
        tb, nb = getattr(net, b), getattr(model, b)
        nb.scale[...], nb.bias[...] = t(tb.weight), t(tb.bias)
        nb.mean[...], nb.var[...] = t(tb.running_mean), t(tb.running_var)
    model.head.kernel[...] = t(net.head.weight).T
    model.head.bias[...] = t(net.head.bias)
    model.eval()
    return model
