"""The layers of a reference_net plan, built by one framework's constructors, and the plan run through them."""

from __future__ import annotations

from typing import Any, Callable


def plan_layers(ops: list[tuple], conv: Callable[[int, int, int], Any], bn: Callable[[int], Any],
                dense: Callable[[int, int], Any]) -> dict[str, Any]:
    """Canonical layer name -> layer for the ops of `reference_net.plan`, in plan order.

    `conv(cin, cout, k)` builds a k x k stride-1 convolution that keeps the image size (k is 1 for a block's
    convolution), `bn(channels)` a BatchNorm, `dense(cin, cout)` a fully connected layer. A block contributes
    "<name>.bn" then "<name>.conv"; relu and gap hold no layer.
    """
    layers: dict[str, Any] = {}
    for op in ops:
        if op[0] == "conv":
            layers[op[1]] = conv(op[2], op[3], op[4])
        elif op[0] == "bn":
            layers[op[1]] = bn(op[2])
        elif op[0] == "dense":
            layers[op[1]] = dense(op[2], op[3])
        elif op[0] == "block":
            layers[f"{op[1]}.bn"] = bn(op[2])
            layers[f"{op[1]}.conv"] = conv(op[2], op[3], 1)
    return layers


def run_plan(ops: list[tuple], layer: Callable[[str], Any], h: Any, *, relu: Callable[[Any], Any],
             gap: Callable[[Any], Any], cat: Callable[[Any, Any], Any]) -> Any:
    """Run the ops of `reference_net.plan` on `h` with one framework's layers and functions.

    `layer(name)` is the layer built under that canonical name (see plan_layers), `relu` and `gap` (global average
    pooling over the spatial axes) the framework's functions, `cat(h, c)` joins a block's new channels c to its input
    h along the channel axis.
    """
    for op in ops:
        if op[0] in ("conv", "bn", "dense"):
            h = layer(op[1])(h)
        elif op[0] == "relu":
            h = relu(h)
        elif op[0] == "gap":
            h = gap(h)
        elif op[0] == "block":
            h = cat(h, layer(f"{op[1]}.conv")(relu(layer(f"{op[1]}.bn")(h))))
    return h
