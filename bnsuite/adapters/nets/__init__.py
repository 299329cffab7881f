"""Small networks with BatchNorm, one implementation per framework (named by an adapter's "network" capability),
built from ONE set of canonical weights.

``build_network(adapter_cls, arch, weights, ...)`` returns a `Network`: forward, one step of the framework's own SGD
optimizer on the MSE loss (mean over every element), the BN states and every weight, in the canonical layout of
``adapters/nets/reference_net.py`` (conv kernels (out, in, kh, kw), dense kernels (out, in)). Each framework module
documents its layout conversion, declares the framework's own kernel layouts (`weight_layout`, axis orders from
`kernel_layout`) and reports the kernel shapes the framework holds (`native_kernel_shapes`), which the network suite
compares. Frameworks are imported inside the builders only, so importing this package stays framework-free.

``bn_idiom`` freezes the BatchNorm layers with one of the adapter's declared freeze idioms (``Declaration.freeze``),
by the recipe of the adapter's ``freeze_idioms`` table that its lone layer reads too (``build_network`` looks it up
and hands it to the builder as ``recipe``); ``sgd_step`` then takes the idiom's training step. None means ordinary
training (everything trains, BN in training mode, running statistics update).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnsuite.adapters import capabilities
from bnsuite.adapters.base import Cited, State, Unsupported
from bnsuite.adapters.nets.reference_net import ARCHS, ReferenceNet, bn_names, init_weights, param_names, plan

# A kernel's axes: O its output channels (features), I its input ones, H and W the kernel's height and width.
AXES = {"O": "out", "I": "in", "H": "kh", "W": "kw"}


def kernel_layout(conv: str, dense: str) -> dict[str, str]:
    """A declared kernel layout from the axis orders of the conv and dense kernels ("OIHW", "OI"): the orders (which
    `declared_kernel_shapes` reads) and the text the report's porting table shows."""
    def text(axes: str) -> str:
        return "(" + ", ".join(AXES[a] for a in axes) + ")"

    return {"conv kernel": f"{text(conv)}  {conv}", "dense kernel": text(dense), "conv axes": conv,
            "dense axes": dense}


# Kernel layouts: torch's (the canonical one) and the channels-last one of Keras, the TF1 layers and Flax. From
# canonical: conv w.transpose(2, 3, 1, 0), dense w.T; back: conv w.transpose(3, 2, 0, 1), dense w.T.
OIHW = kernel_layout("OIHW", "OI")
HWIO = kernel_layout("HWIO", "IO")


def declared_kernel_shapes(layout: dict[str, str], arch: str) -> dict[str, tuple[int, ...]]:
    """The shape of every conv and dense kernel of `arch` (canonical name -> shape) that a framework holding the
    declared `layout` has: each kernel's (out, in, kh, kw) from the plan, in the layout's axis order."""
    if not {"conv axes", "dense axes"} <= set(layout):
        raise Unsupported(f"the network declares no kernel weight layout ({layout!r}): declare weight_layout with "
                          "kernel_layout() to have it checked")
    kernels = {}
    for op in plan(arch):
        if op[0] == "conv":
            kernels[f"{op[1]}.kernel"] = ("conv", {"O": op[3], "I": op[2], "H": op[4], "W": op[4]})
        elif op[0] == "block":  # its 1x1 convolution
            kernels[f"{op[1]}.conv.kernel"] = ("conv", {"O": op[3], "I": op[2], "H": 1, "W": 1})
        elif op[0] == "dense":
            kernels[f"{op[1]}.kernel"] = ("dense", {"O": op[3], "I": op[2]})
    return {name: tuple(dims[a] for a in layout[f"{kind} axes"]) for name, (kind, dims) in kernels.items()}


class Network:
    """The interface every framework network implements (see the module docstring)."""

    arch: str
    adapter_id: str
    channels_last: bool
    # What sgd_step returns: "batch" (the loss of this step's batch, before the step) or "running-mean" (the mean of
    # the losses of every step since the model was compiled, as Keras' train_on_batch reported before 3.15).
    reported_loss: "Cited[str]" = Cited("batch", "the network computes the loss of the step's batch itself")
    # The framework's own conv and dense kernel layouts (OIHW, HWIO or another `kernel_layout`), which a porting user
    # converts between; the builder converts the canonical weights into them, so the network suite's weight checks
    # hold only if it does, and the suite checks the declaration against `native_kernel_shapes`.
    weight_layout: "Cited[dict[str, str]]" = Cited({}, "not declared")

    def __init__(self, arch: str, weights: dict, *, dtype: str, device: str, channels_last: bool, eps: float,
                 momentum: float, bn_idiom: str | None, recipe: Any):
        self.arch, self.ops, self.channels_last = arch, plan(arch), channels_last
        # The freeze idiom and its recipe from the adapter's freeze_idioms (None: ordinary training).
        self.bn_idiom, self.recipe = bn_idiom, recipe
        self._build(weights, dtype=dtype, device=device, eps=eps, momentum=momentum)

    def _build(self, weights: dict, *, dtype: str, device: str, eps: float, momentum: float) -> None:
        """Build the layers of self.ops in the framework (momentum canonical) and give them the canonical weights."""
        raise NotImplementedError

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def sgd_step(self, x: np.ndarray, target: np.ndarray, lr: float) -> float:
        raise NotImplementedError

    def bn_states(self) -> list[State]:
        w = self.get_weights()
        return [State(w.get(f"{n}.scale"), w.get(f"{n}.offset"), w.get(f"{n}.mean"), w.get(f"{n}.var"))
                for n in bn_names(self.arch)]

    def get_weights(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def native_kernel_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every conv and dense kernel (canonical name, e.g. "conv.kernel") as the framework itself holds
        it, before any conversion to the canonical layout: what `weight_layout` is checked against."""
        raise Unsupported(f"{type(self).__name__} does not report the kernel shapes it holds (native_kernel_shapes)")

    def code_path(self) -> str:
        """The BN implementation path the network's (rank-4) BatchNorm layers take: a key of the declaration's
        running_var_estimator table."""
        return "default"


def build_network(adapter_cls, arch: str, weights: dict, *, dtype: str = "float32", device: str = "cpu",
                  channels_last: bool, eps: float, momentum: float, bn_idiom: str | None = None) -> Network:
    """Build `arch` in the adapter's framework with the canonical `weights`.

    momentum is canonical (weight of the new batch statistic, PyTorch's convention); each builder converts it the way
    the adapter converts it for its single layer. The builder is the adapter's "network" capability: CapabilityAbsent
    (an Unsupported) where it names none, CapabilityBroken where it cannot be loaded; Unsupported for a request the
    framework cannot express.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHS)}")
    builder = capabilities.load(adapter_cls, "network")
    kw: dict[str, Any] = dict(dtype=dtype, device=device, channels_last=channels_last, eps=eps, momentum=momentum,
                              bn_idiom=bn_idiom, recipe=_recipe(adapter_cls, bn_idiom))
    net = builder(adapter_cls, arch, {k: np.asarray(v, np.float64) for k, v in weights.items()}, **kw)
    net.arch, net.adapter_id, net.channels_last = arch, adapter_cls.id, channels_last
    return net


def _recipe(adapter_cls, bn_idiom: str | None) -> Any:
    """The recipe of a declared freeze idiom from the adapter's freeze_idioms, the table its lone layer reads too (None
    without an idiom); Unsupported where the idiom is not declared or the adapter says its networks cannot run it."""
    if bn_idiom is None:
        return None
    if bn_idiom not in adapter_cls.declare().freeze:
        raise Unsupported(f"{adapter_cls.id} network: freeze idiom {bn_idiom!r} is not declared")
    recipe = adapter_cls.freeze_recipe(bn_idiom)
    why_not = adapter_cls.freeze_idioms[bn_idiom].network
    if why_not:
        raise Unsupported(f"{adapter_cls.id} network: freeze idiom {bn_idiom!r}: {why_not}")
    return recipe


__all__ = ["ARCHS", "HWIO", "OIHW", "Network", "ReferenceNet", "build_network", "bn_names", "declared_kernel_shapes",
           "init_weights", "kernel_layout", "param_names", "plan"]
